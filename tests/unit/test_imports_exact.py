"""Exactness of CSV and NDJSON imports: the good records load, the bad ones are rejected
by their true source line, whatever the quoting, line ends, BOM or '\\.' lines; numbers
keep their text; records past max_record_bytes are row errors; a file that changes while
it is read fails the job; errors retrying cannot fix fail at once, saying what to change."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from importd.handlers import sources
from importd.handlers.imports import reading
from importd.models import PermanentError


async def test_a_file_that_changes_while_read_raises_source_changed(root: Path) -> None:
    for change in ("truncate", "grow", "replace"):
        path = root / f"{change}.csv"
        path.write_bytes(b"x" * (3 * sources.BLOCK))
        opened = await sources.open_file(f"file://{path}", (str(root),), 0)
        try:
            blocks = opened.blocks
            await anext(blocks)
            if change == "truncate":
                os.truncate(path, sources.BLOCK + 10)
            elif change == "grow":
                with path.open("ab") as fh:
                    fh.write(b"more")
            else:
                (root / "new").write_bytes(b"y" * (3 * sources.BLOCK))
                os.replace(root / "new", path)
            with pytest.raises(sources.SourceChanged, match="changed while it was read"):
                async for _ in blocks:
                    pass
        finally:
            await opened.close()


def test_a_header_of_more_fields_than_a_table_can_have_fails_before_it_is_split() -> None:
    csv_spec = SimpleNamespace(encoding="utf-8", delimiter=",", quote='"', escape='"')
    with pytest.raises(PermanentError, match=r"header line has 300,000 fields; .* 1,600"):
        reading.header_fields(",".join(f"c{i}" for i in range(300_000)).encode(), csv_spec)
    # Delimiters inside quotes are no fields: such a header is split by the csv module.
    quoted = b'"' + b"," * 5000 + b'",b'
    assert reading.header_fields(quoted, csv_spec) == ["," * 5000, "b"]
    assert reading.header_fields(b"a,b,c\r\n", csv_spec) == ["a", "b", "c"]
