"""Which screen an import's chunks get (``screening.Screen``), and the columns it watches.

The screen is built once the target's column types are known (``Copier.names`` and
``types``, kept by its ``CheckTable``), and rebuilt as bad rows teach it: once a chunk
had bad rows, only the columns that held bad values so far are checked (checking a
column costs every record a little; one that held no bad value yet is left to COPY, and
if it holds one later, that chunk's COPY fails, takes the set-based check, and the
column joins the screen: once per column at most), and once a record had a field too
few or too many, whole lines are looked at. No database here: ``Copier`` asks for the
screen (``screen``) and tells the rows a chunk rejected (``bad_rows``).
"""

from __future__ import annotations

from ... import tables
from ...repository import RowFailure
from .bounds import Bound
from .checking import CheckTable
from .screening import Screen, ValueType, screens

# How PostgreSQL starts the message of a record with a field too few or too many.
_FIELD_COUNT = ("missing data for column ", "extra data after last expected column")
# How PostgreSQL starts the message of a row a NOT NULL refused, and names the CHECK
# that refused one.
_NULL_REFUSED = "null value in column "
_CHECK_REFUSED = ("new row for relation ", ' violates check constraint "')


class Watch:
    """The screen of one import (None: not screened) and what it watches.

    ``screened`` False: never a screen (an ``escape`` other than the quote, whose quote
    tracking may differ from the splitter's); ``csv``: the records are CSV (else NDJSON
    rows in COPY's text format), whose bytes the screen may judge as UTF-8."""

    def __init__(
        self, copy_format: tables.CopyFormat, checks: CheckTable, *, screened: bool, csv: bool
    ) -> None:
        self.copy_format = copy_format
        self.checks = checks
        self.screened = screened
        self.csv = csv
        # The types of the import's columns as the screen judges values
        # (``screening.value_type``: an enum's labels, a domain's base type); None: the
        # checks' ``types``.
        self.value_types: list[ValueType] | None = None
        self._screen: Screen | None = None
        self._built = False
        # The columns the screen checks once bad rows appeared: those that held a bad
        # value so far (None: every column).
        self.columns: set[str] | None = None
        # Whether a record with a field too few or too many was seen (see ``Screen``).
        self._fields_seen = False
        # Whether the last chunk had bad rows: then the next is screened before its COPY.
        self.suspecting = False
        # The columns whose NULL the target refused (a NOT NULL): their NULL marker is a
        # suspect from then on, and the check of the suspects finds the refusal
        # (``CheckTable.convert``'s ``refusals``), so that such rows stay out of the
        # chunk's COPY instead of sending every chunk through a second COPY of its own
        # (``CheckTable.find_refused``).
        self.refuse_null: set[str] = set()
        # The CHECKs the screen can tell, by the column they read (``bounds.Bound``: the
        # values they surely admit; set once the target is known), and the columns
        # whose such CHECK refused a row so far: their values out of the bound are
        # suspects from then on, as the NULLs of ``refuse_null`` are.
        self.bounds: dict[str, Bound] = {}
        self.bounded: set[str] = set()

    def screen(self) -> Screen | None:
        """The screen as it is now (built on first use once the types are known)."""
        if not self._built and self.checks.types is not None:
            self._rebuild()
        return self._screen

    def bad_rows(self, found: list[RowFailure]) -> None:
        """Narrow the screen to the columns that held bad values so far, once some did
        (``found``: the rows a chunk rejected)."""
        if self._screen is None:
            return
        names = self.checks.names
        if not self._fields_seen and any(f.message.startswith(_FIELD_COUNT) for f in found):
            # A record with a field too few or too many: the bytes screen looks at whole
            # lines from now on (``Screen.build``'s ``whole``).
            self._fields_seen = True
            self._rebuild()
        if self.checks.filtering and (self._learn_null(found) | self._learn_check(found)):
            self._rebuild()
        named = set()
        # (Most rows name a column already watched: one C-speed test each for those.)
        known = tuple(f"column {name}: " for name in self.columns or ())
        for failure in found:
            text = failure.message
            if not text.startswith("column ") or (known and text.startswith(known)):
                continue  # (a row's refusal, a field count: no column's value)
            for name in names:
                if text.startswith(f"column {name}: "):
                    named.add(name)
        if not named and self.columns is None:
            # Bad rows, none for a value (a field too few or too many, bytes that are not
            # UTF-8): no column needs watching; the screen looks at fields and bytes only.
            self.columns = set()
            self._rebuild()
            return
        if not named or (self.columns is not None and named <= self.columns):
            return
        self.columns = named if self.columns is None else self.columns | named
        self._rebuild()

    def _learn_null(self, found: list[RowFailure]) -> bool:
        """Add to ``refuse_null`` the columns whose NULL a row of ``found`` was refused
        for (PostgreSQL's ``null value in column "…" of relation …``); whether any was
        new."""
        new = False
        for failure in found:
            text = failure.message
            if not text.startswith(_NULL_REFUSED):
                continue
            for name in self.checks.names:
                if name not in self.refuse_null and text.startswith(
                    f'{_NULL_REFUSED}"{name}" of relation '
                ):
                    self.refuse_null.add(name)
                    new = True
        return new

    def _learn_check(self, found: list[RowFailure]) -> bool:
        """Add to ``bounded`` the columns whose CHECK (one of ``bounds``) refused a row
        of ``found``; whether any was new."""
        waiting = {name: b for name, b in self.bounds.items() if name not in self.bounded}
        if not waiting:
            return False
        start, middle = _CHECK_REFUSED
        new = False
        for failure in found:
            text = failure.message
            if not text.startswith(start) or middle not in text:
                continue
            for name, bound in list(waiting.items()):
                if any(f'{middle}{c}"' in text for c in bound.constraints):
                    self.bounded.add(name)
                    del waiting[name]
                    new = True
        return new

    def _rebuild(self) -> None:
        self._screen = self._build()
        self._built = True

    def _build(self) -> Screen | None:
        types = self.checks.types
        if not self.screened or types is None:
            return None
        kinds = self.value_types or types
        fmt = self.copy_format
        watch = None
        if self.columns is not None:
            watch = {i for i, name in enumerate(self.checks.names) if name in self.columns}
        elif not all(map(screens, kinds)):
            # A type the screen does not know (a composite, a domain with a CHECK…): the
            # screen vouches for the other columns and leaves that one to COPY. If it
            # holds a bad value, the COPY of the chunk without its suspects fails and
            # takes the set-based check, and the column is watched from then on (so no
            # screen).
            watch = {i for i, t in enumerate(kinds) if screens(t)}
            if kinds and not watch:
                return None
        refuse_null = {
            i
            for i, name in enumerate(self.checks.names)
            if name in self.refuse_null and screens(kinds[i])
        }
        bounds = {
            i: self.bounds[name].pattern
            for i, name in enumerate(self.checks.names)
            if name in self.bounded and screens(kinds[i])
        }
        return Screen.build(
            kinds,
            fmt.format,
            fmt.delimiter,
            fmt.quote,
            fmt.escape,
            fmt.null,
            watch,
            whole=self._fields_seen,
            utf8=self.csv and fmt.encoding == "UTF8",
            refuse_null=refuse_null,
            bounds=bounds,
        )
