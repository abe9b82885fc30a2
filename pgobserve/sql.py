"""Render the trigger SQL for an observed table (internal). Pure functions: no database or I/O.

Each observed table gets one PL/pgSQL function and four statement-level triggers
(INSERT, UPDATE, DELETE with transition tables, and TRUNCATE). The function sends
compact JSON payloads of primary keys, never row data, chunked under PostgreSQL's
8000-byte NOTIFY limit, so one 100,000-row statement costs a handful of NOTIFYs.

The template is versioned: the hash of the rendered SQL is stored in ``COMMENT ON``
the function and each trigger, so ``pgobserve status`` can tell current from stale.
Changing the template below changes every hash; bump ``TEMPLATE_VERSION`` with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db import models

__all__: list[str] = []  # internal: no public API

TEMPLATE_VERSION = 2

#: PostgreSQL rejects a NOTIFY payload of 8000 bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH).
PAYLOAD_LIMIT = 7999

#: Trigger names per operation; trigger names are per table, so they need no suffix.
TRIGGER_NAMES = {
    "INSERT": "pgobserve_insert",
    "UPDATE": "pgobserve_update",
    "DELETE": "pgobserve_delete",
    "TRUNCATE": "pgobserve_truncate",
}

COMMENT_PREFIX = "pgobserve:"

#: The table where triggers of ``old_rows`` tables keep the rows as they were before a
#: change, until the listener has read them: one table for all, unlogged (they are
#: transient), keyed by transaction id. The payloads of such a table carry that id.
OLD_ROWS = "pgobserve_old_row"

#: The largest transaction id (an xid8, 64 bits): the widest ``"x"`` a payload makes room for.
MAX_XID = 2**64 - 1

#: PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an identifier and drops the rest.
NAME_MAX_BYTES = 63

_OP_CODES = {"INSERT": "I", "UPDATE": "U", "DELETE": "D", "TRUNCATE": "T"}


@dataclass(frozen=True)
class TableSpec:
    """What the SQL needs to know of one observed table."""

    table: str
    pk_column: str
    channel: str = "pgobserve"
    #: "int", "uuid" or "other": how the pk is written as JSON (see ``_json_pk``), or
    #: "digest": the md5 of its text instead, for pks that are secrets (session keys).
    pk_kind: str = "other"
    #: UPDATEs of up to this many rows are compared row by row, so no-op updates send
    #: nothing; larger ones send every pk they touched (see ``conf.update_diff_max_rows``).
    diff_max_rows: int = 10_000
    #: Keep the rows as they were before each UPDATE, DELETE and TRUNCATE in ``OLD_ROWS``
    #: and name the transaction in the payloads (``"x"``): what a model observer needs to
    #: tell the groups a row left (see ``observer/feed.py``).
    old_rows: bool = False


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's ``quote_ident`` does (always quoted)."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal (``standard_conforming_strings`` is on since PostgreSQL 9.1)."""
    if "\x00" in value:
        raise ValueError(f"literal {value!r} contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def _dollar_quote(body: str) -> str:
    tag = "pgobserve"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


def stored_name(name: str) -> str:
    """The name PostgreSQL stores for the identifier ``name``: at most its first 63 bytes,
    cut on a character boundary (a UTF-8 database). A table created as a longer ``db_table``
    is found in the catalog under this name; Django's queries reach it through the same cut."""
    return name.encode()[:NAME_MAX_BYTES].decode(errors="ignore")


def function_name(table: str) -> str:
    """A readable, unique, < 64-byte function name for a table's notify function.

    Derived from the name the table has in the catalog (``stored_name``), so an orphaned
    table, known only by that name, still leads to its function; for a name that fits,
    that is the name itself, so installed functions keep their names."""
    table = stored_name(table)
    slug = re.sub(r"[^a-z0-9_]+", "_", table.lower()).strip("_")[:36]
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"pgobserve_{slug}_{digest}" if slug else f"pgobserve_{digest}"


def payload_header(table: str, op: str, xid: int | None = None) -> str:
    """The start of every payload for (table, op), up to the opening ``[`` of pks; with
    the transaction id ``xid`` for tables that keep old rows."""
    if xid is None:
        return '{"v":1,"t":%s,"op":"%s","pk":[' % (json.dumps(table), op)
    return '{"v":1,"t":%s,"op":"%s","x":%d,"pk":[' % (json.dumps(table), op, xid)


def render_old_rows_table() -> list[str]:
    """Statements creating the ``OLD_ROWS`` table if it does not exist (idempotent)."""
    table = quote_ident(OLD_ROWS)
    return [
        f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ("
        " id bigserial PRIMARY KEY, xid xid8 NOT NULL, tbl text NOT NULL,"
        " image jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(OLD_ROWS + '_xid')} ON {table} (xid)",
    ]


def _keep_old_rows(spec: TableSpec, source: str) -> str:
    """INSERT of the rows of ``source`` (a transition table or the table) into OLD_ROWS.
    ``r.*``, not ``r``: a bare ``r`` would be the table's column ``r``, if it has one."""
    return (
        f"INSERT INTO {quote_ident(OLD_ROWS)} (xid, tbl, image)"
        f" SELECT pg_current_xact_id(), {quote_literal(spec.table)}, to_jsonb(r.*)"
        f" FROM {source} r;"
    )


def _update_diff_query(spec: TableSpec) -> str:
    """Pks of rows whose image changed, and both pks of a row whose pk changed (one side of
    the full join is then missing). ``*=`` compares row images, so it also works for column
    types without an equality operator (json, point)."""
    pk = quote_ident(spec.pk_column)
    return (
        f"SELECT coalesce(n.{pk}, o.{pk}) AS pk FROM pgobserve_new n"
        f" FULL JOIN pgobserve_old o ON o.{pk} = n.{pk}"
        f" WHERE n.{pk} IS NULL OR o.{pk} IS NULL OR NOT (n *= o)"
    )


def _update_all_query(spec: TableSpec) -> str:
    """Every new pk, plus every old pk when the pk lists differ (a pk was updated).

    The transition tables list a statement's rows in the same order, so equal arrays mean
    no pk changed; if they ever were not aligned, both lists are sent: more, never less.
    """
    pk = quote_ident(spec.pk_column)
    return (
        f"SELECT n.{pk} AS pk FROM pgobserve_new n"
        f" UNION ALL SELECT o.{pk} FROM pgobserve_old o WHERE pk_moved"
    )


def _frame(spec: TableSpec, op: str) -> tuple[str, int, str]:
    """(payload header, bytes left for the pk list, the "unknown rows" payload) for ``op``,
    the first and last as SQL expressions. A table that keeps old rows puts the
    transaction id (the plpgsql variable ``tx_id``) in its header: room for the widest is
    kept."""
    if not spec.old_rows:
        header = payload_header(spec.table, _OP_CODES[op])
        budget = PAYLOAD_LIMIT - len(header.encode()) - len("]}")
        return quote_literal(header), budget, quote_literal(header[: -len("[")] + "null}")
    widest = payload_header(spec.table, _OP_CODES[op], MAX_XID)
    budget = PAYLOAD_LIMIT - len(widest.encode()) - len("]}")
    start, end = payload_header(spec.table, _OP_CODES[op], 0).split('"x":0', 1)
    start = quote_literal(start + '"x":') + " || tx_id"
    return (
        f"{start} || {quote_literal(end)}",
        budget,
        f"{start} || {quote_literal(end[:-1] + 'null}')}",
    )


def _chunks_query(spec: TableSpec, op: str, ids_query: str) -> str:
    """SELECT of the payload texts for the pks (column ``pk``) of ``ids_query``.

    Numbers and uuids, whose JSON is their text, are gathered into one array of the
    native type and cut into slices of as many pks as the widest allows: slicing a
    fixed-width array is cheap, and skipping ``to_json`` halves the trigger's cost on a
    100,000-row UPDATE. Other pks are written with ``to_json`` and cut on a running byte
    total, which packs uneven widths tightly. A pk too wide for any payload degrades to
    ``"pk":null`` ("some rows changed"): the writer never gets an error.
    """
    head, budget, unknown = _frame(spec, op)
    if spec.pk_kind == "digest":
        ids_query = f"SELECT md5(secret.pk::text) AS pk FROM ({ids_query}) AS secret"
    if spec.pk_kind in ("int", "uuid", "digest"):
        if spec.pk_kind == "int":
            width = "greatest(length(max(pk)::text), length(min(pk)::text))"
            body = "array_to_string(pks[i:i + step - 1], ',')"
        else:
            width = "38"  # at most 36 characters and two quotes
            body = "'\"' || array_to_string(pks[i:i + step - 1], '\",\"') || '\"'"
        return f"""
      SELECT {head} || {body} || ']}}'
      FROM (SELECT array_agg(pk) AS pks, {budget} / ({width} + 1) AS step
            FROM ({ids_query}) AS ids) AS collected,
           generate_series(1, cardinality(pks), step) AS i"""
    return f"""
      WITH ids AS (SELECT to_json(pk)::text AS j FROM ({ids_query}) AS changed),
      sized AS (
        SELECT j, sum(octet_length(j) + 1) OVER (ROWS UNBOUNDED PRECEDING) AS pos,
               max(octet_length(j)) OVER () AS widest
        FROM ids
      )
      SELECT CASE WHEN max(widest) > {budget} THEN {unknown}
                  ELSE {head} || string_agg(j, ',') || ']}}' END
      FROM sized
      GROUP BY CASE WHEN widest > {budget} THEN 0 ELSE pos / ({budget} + 1 - widest) END"""


def _chunked_notify(spec: TableSpec, op: str, ids_query: str) -> str:
    """A FOR loop that sends the pks of ``ids_query`` in as few payloads as the limit allows."""
    return f"""
    FOR payload IN {_chunks_query(spec, op, ids_query)}
    LOOP
      PERFORM pg_notify({quote_literal(spec.channel)}, payload);
    END LOOP;"""


def _json_pk(alias: str, spec: TableSpec) -> str:
    """The JSON text of one pk (the single-row path)."""
    column = f"{alias}.{quote_ident(spec.pk_column)}"
    if spec.pk_kind == "int":
        return f"{column}::text"
    if spec.pk_kind == "uuid":
        return f"'\"' || {column}::text || '\"'"
    if spec.pk_kind == "digest":
        return f"'\"' || md5({column}::text) || '\"'"
    return f"to_json({column})::text"


def _single_notify(spec: TableSpec, op: str, pks_json: str) -> str:
    """PERFORM pg_notify of one payload whose pk list is the SQL text ``pks_json``."""
    head, budget, unknown = _frame(spec, op)
    return (
        f"PERFORM pg_notify({quote_literal(spec.channel)}, CASE WHEN octet_length({pks_json})"
        f" > {budget} THEN {unknown}"
        f" ELSE {head} || {pks_json} || ']}}' END);"
    )


def render_function(spec: TableSpec) -> str:
    """The table's notify function. A one-row statement (an ORM save) takes a short path
    of two trivial queries; the general path gathers and chunks any number of pks."""
    pk = quote_ident(spec.pk_column)
    truncate = _frame(spec, "TRUNCATE")[2]
    declare_xid = keep_truncated = keep_changed = ""
    if spec.old_rows:
        # The rows as they were go to OLD_ROWS, in the same transaction as the change; the
        # TRUNCATE trigger runs BEFORE, while the rows are still there.
        declare_xid = "\n  tx_id text := pg_current_xact_id()::text;"
        keep_truncated = "\n    " + _keep_old_rows(spec, quote_ident(spec.table))
        keep_changed = (
            "\n  IF TG_OP IN ('UPDATE', 'DELETE') THEN\n    "
            + _keep_old_rows(spec, "pgobserve_old")
            + "\n  END IF;"
        )
    new_pks = f"SELECT n.{pk} AS pk FROM pgobserve_new n"
    old_pks = f"SELECT o.{pk} AS pk FROM pgobserve_old o"
    body = f"""
DECLARE
  payload text;
  pk_moved boolean;
  row_count bigint;
  new_pk text;
  old_pk text;
  same_pk boolean;
  unchanged boolean;{declare_xid}
BEGIN
  IF TG_OP = 'TRUNCATE' THEN{keep_truncated}
    PERFORM pg_notify({quote_literal(spec.channel)}, {truncate});
    RETURN NULL;
  END IF;{keep_changed}
  IF TG_OP = 'DELETE' THEN
    SELECT count(*) INTO row_count FROM pgobserve_old;
  ELSE
    SELECT count(*) INTO row_count FROM pgobserve_new;
  END IF;
  IF row_count = 0 THEN
    RETURN NULL;
  ELSIF row_count = 1 AND TG_OP = 'INSERT' THEN
    SELECT {_json_pk("n", spec)} INTO new_pk FROM pgobserve_new n;
    {_single_notify(spec, "INSERT", "new_pk")}
  ELSIF row_count = 1 AND TG_OP = 'DELETE' THEN
    SELECT {_json_pk("o", spec)} INTO old_pk FROM pgobserve_old o;
    {_single_notify(spec, "DELETE", "old_pk")}
  ELSIF row_count = 1 THEN
    -- A one-row UPDATE: nothing if the row image did not change; both pks if the pk did.
    SELECT {_json_pk("n", spec)}, {_json_pk("o", spec)}, n.{pk} = o.{pk}, n *= o
      INTO new_pk, old_pk, same_pk, unchanged
      FROM pgobserve_new n, pgobserve_old o;
    IF NOT same_pk THEN
      {_single_notify(spec, "UPDATE", "new_pk || ',' || old_pk")}
    ELSIF NOT unchanged THEN
      {_single_notify(spec, "UPDATE", "new_pk")}
    END IF;
  ELSIF TG_OP = 'INSERT' THEN{_chunked_notify(spec, "INSERT", new_pks)}
  ELSIF TG_OP = 'DELETE' THEN{_chunked_notify(spec, "DELETE", old_pks)}
  ELSIF row_count <= {int(spec.diff_max_rows)} THEN
    -- UPDATE small enough to compare row by row: rows that did not change send nothing.
{_chunked_notify(spec, "UPDATE", _update_diff_query(spec))}
  ELSE
    -- A large UPDATE: comparing would double its cost; consumers drop unchanged data.
    pk_moved := ARRAY(SELECT {pk} FROM pgobserve_new) IS DISTINCT FROM
                ARRAY(SELECT {pk} FROM pgobserve_old);
{_chunked_notify(spec, "UPDATE", _update_all_query(spec))}
  END IF;
  RETURN NULL;
END;
"""
    return (
        f"CREATE OR REPLACE FUNCTION {quote_ident(function_name(spec.table))}() "
        f"RETURNS trigger LANGUAGE plpgsql AS {_dollar_quote(body)}"
    )


def _render_trigger(spec: TableSpec, op: str) -> str:
    referencing = {
        "INSERT": " REFERENCING NEW TABLE AS pgobserve_new",
        "UPDATE": " REFERENCING OLD TABLE AS pgobserve_old NEW TABLE AS pgobserve_new",
        "DELETE": " REFERENCING OLD TABLE AS pgobserve_old",
        "TRUNCATE": "",
    }[op]
    when = "BEFORE" if op == "TRUNCATE" and spec.old_rows else "AFTER"
    return (
        f"CREATE TRIGGER {quote_ident(TRIGGER_NAMES[op])} {when} {op} ON {quote_ident(spec.table)}"
        f"{referencing} FOR EACH STATEMENT"
        f" EXECUTE FUNCTION {quote_ident(function_name(spec.table))}()"
    )


def _definition(spec: TableSpec) -> list[str]:
    return [render_function(spec)] + [_render_trigger(spec, op) for op in TRIGGER_NAMES]


def signature(spec: TableSpec) -> str:
    """The version comment stored on the installed objects: template version + SQL hash."""
    digest = hashlib.sha256("\n".join(_definition(spec)).encode()).hexdigest()[:16]
    return f"{COMMENT_PREFIX}v{TEMPLATE_VERSION}:{digest}"


def render_drop(spec: TableSpec) -> list[str]:
    """Statements that remove every pgobserve object of this table; safe when none exist."""
    table = quote_ident(spec.table)
    drops = [
        f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {table}" for name in TRIGGER_NAMES.values()
    ]
    return drops + [f"DROP FUNCTION IF EXISTS {quote_ident(function_name(spec.table))}()"]


def render_install(spec: TableSpec) -> list[str]:
    """Statements that install or replace the table's function and triggers (one transaction)."""
    comment = quote_literal(signature(spec))
    table = quote_ident(spec.table)
    statements = render_old_rows_table() if spec.old_rows else []
    statements.append(render_function(spec))
    statements += [
        f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {table}" for name in TRIGGER_NAMES.values()
    ]
    statements += [_render_trigger(spec, op) for op in TRIGGER_NAMES]
    statements.append(
        f"COMMENT ON FUNCTION {quote_ident(function_name(spec.table))}() IS {comment}"
    )
    statements += [
        f"COMMENT ON TRIGGER {quote_ident(name)} ON {table} IS {comment}"
        for name in TRIGGER_NAMES.values()
    ]
    return statements


_INT_FIELDS = {
    "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
    "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}  # fmt: skip


def pk_digest(pk: Any) -> str:
    """What a "digest" table's payloads carry for ``pk``: PostgreSQL's ``md5(pk::text)``."""
    return hashlib.md5(str(pk).encode()).hexdigest()


def pk_kind(field: Any) -> str:
    """How a Django pk field's values are written as JSON: "int", "uuid" or "other"."""
    while getattr(field, "target_field", None) is not None and field.is_relation:
        field = field.target_field  # a one-to-one pk: the type is the target's
    internal = field.get_internal_type()
    if internal in _INT_FIELDS:
        return "int"
    return "uuid" if internal == "UUIDField" else "other"


def spec_for_model(
    model: type[models.Model],
    channel: str = "pgobserve",
    diff_max_rows: int = 10_000,
    digest: bool = False,
    old_rows: bool = False,
) -> TableSpec:
    """The TableSpec of a Django model (its ``db_table`` and its pk's ``column``).
    ``digest``: send the md5 of each pk, never the pk itself (see ``pk_digest``).
    ``old_rows``: keep the rows as they were before a change (see ``TableSpec``)."""
    meta = model._meta
    return TableSpec(
        table=meta.db_table,
        pk_column=meta.pk.column,
        channel=channel,
        pk_kind="digest" if digest else pk_kind(meta.pk),
        diff_max_rows=diff_max_rows,
        old_rows=old_rows,
    )
