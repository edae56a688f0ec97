"""Audit 17: ``payload.table`` is "plain identifiers only", but its pattern ended in ``$``,
which Python lets match before a final line break: ``import_jobs\\n`` passed as a name
(and, not being ``import_jobs``, passed the own-table check by name too; only the
catalog's exact look-up then found no such table)."""

from __future__ import annotations

import pytest

from importd.handlers import spec
from importd.models import InvalidPayload


@pytest.mark.parametrize("text", ["people\n", "import_jobs\n", "public.import_jobs\n", "s\n.t"])
def test_a_table_name_with_a_line_break_is_refused(text: str) -> None:
    with pytest.raises(InvalidPayload, match="is not a table name"):
        spec.table_name(text)
