"""The ``csv`` and ``ndjson`` handlers: stream a file into a table with COPY.

One pipeline, each stage in its own module:

- ``reading``: source → records → chunks (the bytes, split into records with their
  source lines, cut into chunks of rows);
- ``copying``: records → COPY data, loaded in one statement per chunk; after a chunk
  with bad rows the next is screened first, and bad rows are isolated by the lines
  PostgreSQL names;
- ``checking``: what ``copying`` falls back on once a COPY failed: the set-based check
  of a chunk's rows in a temporary table, and the rows the target refuses (a NOT NULL,
  a CHECK) left out of one COPY by its ``WHERE`` clause;
- ``isolating``: the last fallback, bad rows isolated COPY by COPY;
- ``ahead``: the check ahead, the next chunk's suspects judged (and the rows the target
  refuses found) on another connection while the loader's COPY runs;
- ``moving``: staging → target (the staged strategies, with the conflict rule), bad
  rows isolated by bisection on their source lines;
- ``job``: the run (``Import``): the target, the source and its header, the pipeline
  that prepares the chunks, the checkpoint's contents, the result;
- ``strategies``: COPY → checkpoint, a class each, side by side: ``Direct``,
  ``StagedPerChunk``, ``SingleTransaction``, ``StagedAtomic`` — where the rows go, when
  they commit, how a retry resumes, how the job completes.

Exactly once, whatever crashes: every chunk of rows commits in one transaction with the
checkpoint that accounts for it (source offset, line, counters), and that transaction
only commits while this run still holds the job's lease. A retry resumes after the last
committed chunk. With ``atomic: true`` the rows become visible in the transaction that
marks the job completed: an import of a file COPYs into the target in that one
transaction (``SingleTransaction``; a retry starts over); one from a URL, or with a
conflict rule, COPYs into UNLOGGED per-chunk staging tables whose rows a mover moves in
it (``StagedAtomic``; a retry resumes the staging and moves them all again).

Helper tables (staging, the check's temporary table) name their columns by position
(``c1``..``cN``, after ``importd_line``), never after the user's: a target may have
columns of any name. Staging tables of another shape (an older release's) are never
resumed from.
"""

from __future__ import annotations

from typing import Any

from ...context import JobContext
from ...models import Job
from .common import LeaseLost, TooManyErrors
from .job import Import

__all__ = ["Import", "LeaseLost", "TooManyErrors", "import_csv", "import_ndjson"]


async def import_csv(job: Job, ctx: JobContext) -> Any:
    """Load a CSV file into a table (see the package docstring)."""
    return await Import(job, ctx, "csv").run()


async def import_ndjson(job: Job, ctx: JobContext) -> Any:
    """Load an NDJSON file (one JSON object per line) into a table."""
    return await Import(job, ctx, "ndjson").run()
