"""The payload of an import job, validated field by field.

Every rejection is an ``InvalidPayload`` whose message names the field, so the user sees
``payload.table: ...`` on the job rather than a traceback.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any

from .. import tables
from ..config import how_to_set
from ..models import InvalidPayload

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")

# Source encodings a byte-level record splitter can handle (ASCII-compatible), by Python
# codec name, with PostgreSQL's name for COPY's ENCODING option. ``ascii`` is COPYed as
# UTF8, not SQL_ASCII: PostgreSQL takes SQL_ASCII as "no conversion and no check", so a
# byte above 0x7F went into the table as it was, text the database's encoding does not
# hold, which every later read of the column failed on. PostgreSQL has no strict 7-bit
# encoding; as UTF8 (of which ASCII is a subset) such a byte is a row error at its line,
# or, where it starts a valid UTF-8 sequence, the character it encodes.
ENCODINGS = {
    "utf_8": "UTF8",
    "latin_1": "LATIN1",
    "iso8859_15": "LATIN9",
    "cp1252": "WIN1252",
    "cp1251": "WIN1251",
    "cp1250": "WIN1250",
    "ascii": "UTF8",
    "koi8_r": "KOI8R",
}

CONFLICT_RULES = ("error", "ignore", "update")


@dataclass(frozen=True)
class ImportSpec:
    """What one import job asks for."""

    source: str
    schema: str
    table: str
    fmt: str  # csv | ndjson
    mapping: dict[str, str] = field(default_factory=dict)  # file field -> column
    columns: tuple[str, ...] = ()  # header=false: the file's columns, in order
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    header: bool = True
    encoding: str = "utf_8"
    null: str = ""
    max_errors: int = 0
    atomic: bool = True
    on_conflict: str = "error"
    conflict_columns: tuple[str, ...] = ()
    chunk_rows: int | None = None

    @property
    def pg_encoding(self) -> str:
        """The encoding's name for COPY."""
        return ENCODINGS[self.encoding]

    @property
    def qualified(self) -> str:
        """``schema.table`` for messages."""
        return f"{self.schema}.{self.table}"


def is_file(source: str) -> bool:
    """Whether ``source`` is a ``file:`` URL. Its scheme in any letter case (RFC 3986),
    as :func:`parse` accepts it: a ``FILE:///path`` told apart by ``startswith("file:")``
    went to the URL check and failed there as "not file://"."""
    return source[:5].lower() == "file:"


def _get(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = payload.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidPayload(f"payload.{key}: expected {names}, got {type(value).__name__}")
    return value


def _char(payload: dict[str, Any], key: str, default: str) -> str:
    value: str = _get(payload, key, str, default)
    if len(value) != 1 or value in "\r\n" or not value.isascii():
        raise InvalidPayload(
            f"payload.{key}: must be one ASCII character, not a newline "
            f"(PostgreSQL's COPY takes one byte), got {value[:10]!r}"
        )
    return value


def table_name(text: str) -> tuple[str, str]:
    """``(schema, table)`` from ``table`` or ``schema.table``; plain identifiers only."""
    parts = text.split(".")
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise InvalidPayload(
            f"payload.table: {text!r} is not a table name (letters, digits, _ and $, "
            "optionally schema-qualified)"
        )
    return parts[0], parts[1]


def table_allowed(schema: str, table: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``schema.table`` is matched by an allowlist entry (``t``, ``s.t``, ``s.*``)."""
    for entry in allowlist:
        s, _, t = entry.rpartition(".")
        s = s or "public"
        if s == schema and t in ("*", table):
            return True
    return False


KNOWN = {
    "source",
    "table",
    "columns",
    "delimiter",
    "quote",
    "escape",
    "header",
    "encoding",
    "null",
    "max_errors",
    "atomic",
    "on_conflict",
    "conflict_columns",
    "chunk_rows",
}
CSV_ONLY = {"delimiter", "quote", "escape", "header", "encoding", "null"}


def parse(
    payload: dict[str, Any],
    fmt: str,
    allowed_tables: tuple[str, ...] | None,
    *,
    command: str | None = None,
) -> ImportSpec:
    """Validate ``payload`` of a ``csv`` or ``ndjson`` job (``allowed_tables=None``: every
    field but the table allowlist, for producers that do not know it). A refusal by the
    allowlist names the ways to set it that work for ``command`` (None: a daemon's)."""
    unknown = sorted(set(payload) - KNOWN)
    if unknown:
        raise InvalidPayload(
            f"payload.{unknown[0]}: unknown field (known: {', '.join(sorted(KNOWN))})"
        )
    if fmt == "ndjson":
        stray = sorted(set(payload) & CSV_ONLY)
        if stray:
            raise InvalidPayload(f"payload.{stray[0]}: a CSV option, not for NDJSON")
    source = _get(payload, "source", str, None)
    if not source:
        raise InvalidPayload("payload.source: required (file:///path or https://...)")
    scheme = source.partition(":")[0].lower() if ":" in source else ""
    if scheme not in ("file", "https", "http"):
        hint = f" (did you mean file://{source}?)" if source.startswith("/") else ""
        raise InvalidPayload(
            f"payload.source: {source[:200]!r} is neither a file:///path (under import_roots) "
            f"nor an https:// URL (under url_prefixes){hint}"
        )
    raw_table = _get(payload, "table", str, None)
    if not raw_table:
        raise InvalidPayload("payload.table: required")
    schema, table = table_name(raw_table)
    tables.refuse_own_table(schema, table)
    if allowed_tables is not None and not table_allowed(schema, table, allowed_tables):
        raise InvalidPayload(
            f"payload.table: {schema}.{table} is not in importd's table allowlist "
            f"({'none configured' if not allowed_tables else ', '.join(allowed_tables)}); "
            f"add it with {how_to_set('tables', f'{schema}.{table}', command, allowed_tables)}"
        )

    mapping: dict[str, str] = {}
    columns: tuple[str, ...] = ()
    raw_columns = payload.get("columns")
    if isinstance(raw_columns, dict):
        if not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in raw_columns.items()
        ):
            raise InvalidPayload("payload.columns: a mapping of field names to column names")
        mapping = dict(raw_columns)
    elif isinstance(raw_columns, list):
        if not all(isinstance(c, str) and c for c in raw_columns) or not raw_columns:
            raise InvalidPayload("payload.columns: a list of column names")
        columns = tuple(raw_columns)
    elif raw_columns is not None:
        raise InvalidPayload("payload.columns: a mapping {field: column} or a list of columns")

    header = _get(payload, "header", bool, True)
    if columns and header:
        raise InvalidPayload(
            "payload.columns: a list of columns goes with header: false "
            "(with a header, map names with an object)"
        )
    encoding = _get(payload, "encoding", str, "utf-8")
    try:
        codec = codecs.lookup(encoding).name.replace("-", "_")
    except LookupError:
        raise InvalidPayload(f"payload.encoding: unknown encoding {encoding!r}") from None
    codec = {"iso8859_1": "latin_1", "us_ascii": "ascii", "utf8": "utf_8"}.get(codec, codec)
    if codec not in ENCODINGS:
        raise InvalidPayload(
            f"payload.encoding: {encoding!r} is not supported (supported: "
            "utf-8, latin-1, iso-8859-15, cp1250, cp1251, cp1252, koi8-r, ascii)"
        )
    quote = _char(payload, "quote", '"')
    delimiter = _char(payload, "delimiter", ",")
    escape = _char(payload, "escape", quote)
    if delimiter == quote:
        raise InvalidPayload("payload.delimiter: must differ from payload.quote")
    max_errors = _get(payload, "max_errors", int, 0)
    if max_errors < 0:
        raise InvalidPayload("payload.max_errors: must be 0 or more")
    on_conflict = _get(payload, "on_conflict", str, "error")
    if on_conflict not in CONFLICT_RULES:
        raise InvalidPayload(f"payload.on_conflict: one of {', '.join(CONFLICT_RULES)}")
    conflict_columns = tuple(_get(payload, "conflict_columns", list, []))
    if not all(isinstance(c, str) and c for c in conflict_columns):
        raise InvalidPayload("payload.conflict_columns: a list of column names")
    if on_conflict == "update" and not conflict_columns:
        raise InvalidPayload(
            "payload.conflict_columns: required with on_conflict: update "
            "(the key columns of a unique index)"
        )
    chunk_rows = _get(payload, "chunk_rows", int, None)
    if chunk_rows is not None and not 10 <= chunk_rows <= 1_000_000:
        raise InvalidPayload("payload.chunk_rows: between 10 and 1,000,000")
    null = _get(payload, "null", str, "")
    if "\n" in null or "\r" in null:
        raise InvalidPayload("payload.null: must not contain a newline")
    if fmt == "csv":
        if escape == delimiter:
            raise InvalidPayload(
                "payload.escape: must differ from payload.delimiter (the escape character "
                "only escapes the quote inside quoted fields; usually it is the quote itself)"
            )
        for key, char in (("delimiter", delimiter), ("quote", quote)):
            if char in null:
                raise InvalidPayload(
                    f"payload.null: must not contain the {key} {char!r} "
                    "(a field holding it could not be told from NULL)"
                )
    return ImportSpec(
        source=source,
        schema=schema,
        table=table,
        fmt=fmt,
        mapping=mapping,
        columns=columns,
        delimiter=delimiter,
        quote=quote,
        escape=escape,
        header=header,
        encoding=codec,
        null=null,
        max_errors=max_errors,
        atomic=_get(payload, "atomic", bool, True),
        on_conflict=on_conflict,
        conflict_columns=conflict_columns,
        chunk_rows=chunk_rows,
    )
