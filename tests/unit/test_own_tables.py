"""importd's own tables are never import targets, whatever the ``tables`` allowlist says."""

from __future__ import annotations

import pytest

from importd import tables


@pytest.mark.parametrize(
    ("schema", "name", "own"),
    [
        ("public", "import_jobs", True),
        ("app", "import_jobs", True),
        ("public", "importd_anything_later", True),
        ("importd_staging", "job_7", True),
        ("public", "IMPORTD_RATE_LIMITS", True),
        ("public", "import_jobs_archive", False),
        ("public", "people", False),
        ("imports", "jobs", False),
    ],
)
def test_which_tables_are_importds_own(schema: str, name: str, own: bool) -> None:
    assert tables.is_own_table(schema, name) is own
