"""A chunk's COPY data (``Preparer``): its records made into rows for COPY, or, after a
chunk with bad rows, its bytes screened as they are.

- ``prepare``: the records a reader split (``records.Records``) as COPY rows, each after
  its source line where rows are staged; a record over ``max_record_bytes`` and an
  NDJSON record that does not convert are rejected here, before any COPY; CRLF becomes
  LF and a line ``\\.`` is quoted (it would end the COPY). After a chunk with bad rows
  (``Watch.suspecting``) the batch's suspects are found at once, off the event loop.
- ``screen_raw``: a direct CSV chunk's bytes, COPYable as they are
  (``reading.Cutter.copyable``), screened without splitting them into records.

CPU-bound and free of the database: both run in the producer's thread.
"""

from __future__ import annotations

from ...repository import RowFailure
from ..records import NdjsonRows, Records, RowError
from .batches import Batch, Screened, join_rows
from .common import raw_text
from .watching import Watch


class Preparer:
    """The COPY data of one import's chunks (``Copier.prepare``, ``Copier.screen_raw``)."""

    def __init__(
        self,
        watch: Watch,
        *,
        encoding: str,
        staged: bool,
        ndjson: NdjsonRows | None,
        max_record: int,
        line_prefix: bytes,
        quote: str,
    ) -> None:
        self.watch = watch
        self.encoding = encoding
        self.staged = staged
        self.ndjson = ndjson
        self.max_record = max_record
        self.csv = ndjson is None
        # Rows go to a staging table each after its source line (``line_prefix``).
        self.prefix = line_prefix if staged else b""
        self._dot = quote.encode() + b"\\." + quote.encode()

    def too_long(self, line: int, size: int, raw: bytes | None) -> RowFailure:
        return RowFailure(
            line,
            f"RecordTooLong: the record is {size:,} bytes, more than max_record_bytes="
            f"{self.max_record:,}; split it, or raise max_record_bytes",
            raw_text(raw[:1000], self.encoding) if raw else None,
        )

    def prepare(self, records: Records, failures: list[RowFailure]) -> Batch:
        """The rows of ``records`` for COPY; records rejected before COPY (too long,
        NDJSON that does not convert) go to ``failures``. CPU-bound: run it in a
        thread."""
        lines, datas = records.lines, records.datas
        if datas and (b"" in datas or max(map(len, datas)) > self.max_record):
            kept_lines, kept = [], []
            for line, data in zip(lines, datas, strict=True):
                # A CRLF record keeps its CR here (stripped below): the line end's, not
                # the record's, so a record's limit is the same in an LF or CRLF file.
                size = len(data) - data.endswith(b"\r")
                if not data:
                    failures.append(self.too_long(line, records.too_long[line][0], None))
                elif size > self.max_record:
                    failures.append(self.too_long(line, size, data))
                else:
                    kept_lines.append(line)
                    kept.append(data)
            lines, datas = kept_lines, kept
        if self.ndjson is not None:
            return self._screen_early(self._ndjson(lines, datas, failures))
        raws = datas
        # (One join and one search at C speed; the test per record only when a CR is there.)
        if b"\r" in b"".join(datas) and any(data.endswith(b"\r") for data in datas):
            # CRLF: PostgreSQL gets LF line ends only (its count of lines relies on it).
            datas = [data[:-1] if data.endswith(b"\r") else data for data in datas]
        if not self.staged and b"\\." in datas:
            # A line "\." alone would end the COPY; quoted, it is the value it is in CSV.
            datas = [self._dot if data == b"\\." else data for data in datas]
        return self._screen_early(Batch(lines, raws, datas, self.join(lines, datas), self.prefix))

    def _screen_early(self, batch: Batch) -> Batch:
        """Screen ``batch`` now, off the event loop, when the chunk before had bad rows
        (its own will likely fail its COPY)."""
        screen = self.watch.screen()
        if self.watch.suspecting and screen is not None and batch.bodies:
            batch.suspects = screen.suspects(batch.bodies)
        return batch

    def screen_raw(
        self, data: bytes, first_line: int, next_line: int | None = None
    ) -> Screened | None:
        """Screen a chunk's source bytes ``data`` (whole CSV records from source line
        ``first_line`` to ``next_line``, when known, COPYable as they are:
        ``reading.Cutter.copyable``) without splitting them into records; None when they
        cannot be screened so (the caller prepares the chunk instead). CPU-bound: run it
        in a thread."""
        screen = self.watch.screen()
        if screen is None or self.staged or not self.csv:
            return None
        spans = screen.spans(data)
        if spans is None:
            return None
        lines, raws = [], []
        line, at = first_line, 0
        for start, end in spans:
            line += data.count(b"\n", at, start)
            at = start
            raw = data[start : end - 1] if data[end - 1 : end] == b"\n" else data[start:end]
            lines.append(line)
            raws.append(raw)
        rows = Batch(lines, raws, raws, self.join(lines, raws), self.prefix)
        count = next_line - first_line if next_line is not None else data.count(b"\n") + 1
        return Screened(data, rows, spans, count, first_line)

    def _ndjson(self, lines: list[int], datas: list[bytes], failures: list[RowFailure]) -> Batch:
        assert self.ndjson is not None
        kept_lines, raws, bodies = [], [], []
        for line, data in zip(lines, datas, strict=True):
            try:
                converted = self.ndjson.convert(data)
            except RowError as exc:
                failures.append(RowFailure(line, str(exc), raw_text(data, "utf_8")))
                continue
            if converted is not None:
                kept_lines.append(line)
                raws.append(data)
                bodies.append(converted[:-1])
        return Batch(kept_lines, raws, bodies, self.join(kept_lines, bodies), self.prefix)

    def join(self, lines: list[int], bodies: list[bytes]) -> bytes:
        """The COPY data of ``bodies``, each after its line where rows are staged."""
        return join_rows(self.prefix, lines, bodies)
