"""Render the trigger SQL for an observed table. Pure functions: no database, no Django I/O.

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

TEMPLATE_VERSION = 1

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

_OP_CODES = {"INSERT": "I", "UPDATE": "U", "DELETE": "D", "TRUNCATE": "T"}


@dataclass(frozen=True)
class TableSpec:
    """What the SQL needs to know of one observed table."""

    table: str
    pk_column: str
    channel: str = "pgobserve"


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


def function_name(table: str) -> str:
    """A readable, unique, < 64-byte function name for a table's notify function."""
    slug = re.sub(r"[^a-z0-9_]+", "_", table.lower()).strip("_")[:36]
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"pgobserve_{slug}_{digest}" if slug else f"pgobserve_{digest}"


def payload_header(table: str, op: str) -> str:
    """The constant start of every payload for (table, op), up to the opening ``[`` of pks."""
    return '{"v":1,"t":%s,"op":"%s","pk":[' % (json.dumps(table), op)


def _changed_pks_query(op: str, pk: str) -> str:
    """SELECT of the JSON-encoded pks a statement changed, as column ``j``."""
    if op == "INSERT":
        return f"SELECT to_json(n.{pk})::text AS j FROM pgobserve_new n"
    if op == "DELETE":
        return f"SELECT to_json(o.{pk})::text AS j FROM pgobserve_old o"
    # UPDATE: rows whose image changed, and both pks of a row whose pk was updated (one
    # side of the full join is then missing). `*=` compares row images, so it also works
    # for column types that have no equality operator (json, point).
    return (
        f"SELECT to_json(coalesce(n.{pk}, o.{pk}))::text AS j FROM pgobserve_new n"
        f" FULL JOIN pgobserve_old o ON o.{pk} = n.{pk}"
        f" WHERE n.{pk} IS NULL OR o.{pk} IS NULL OR NOT (n *= o)"
    )


def _chunked_notify(spec: TableSpec, op: str) -> str:
    """A FOR loop that sends the changed pks in as many payloads as the size limit needs.

    Chunks are cut on a running byte total, so each holds as many pks as fit. A pk too
    wide to fit in any payload degrades to ``"pk":null`` ("some rows changed"): the writer
    never gets an error.
    """
    code = _OP_CODES[op]
    header = payload_header(spec.table, code)
    budget = PAYLOAD_LIMIT - len(header.encode()) - len("]}")
    unknown = header[: -len("[")] + "null}"
    pk = quote_ident(spec.pk_column)
    return f"""
    FOR payload IN
      WITH ids AS ({_changed_pks_query(op, pk)}),
      sized AS (
        SELECT j, sum(octet_length(j) + 1) OVER (ROWS UNBOUNDED PRECEDING) AS pos,
               max(octet_length(j)) OVER () AS widest
        FROM ids
      )
      SELECT CASE WHEN max(widest) > {budget} THEN {quote_literal(unknown)}
                  ELSE {quote_literal(header)} || string_agg(j, ',') || ']}}' END
      FROM sized
      GROUP BY CASE WHEN widest > {budget} THEN 0 ELSE pos / ({budget} + 1 - widest) END
    LOOP
      PERFORM pg_notify({quote_literal(spec.channel)}, payload);
    END LOOP;"""


def render_function(spec: TableSpec) -> str:
    truncate = '{"v":1,"t":%s,"op":"T","pk":null}' % json.dumps(spec.table)
    body = f"""
DECLARE
  payload text;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify({quote_literal(spec.channel)}, {quote_literal(truncate)});
  ELSIF TG_OP = 'INSERT' THEN{_chunked_notify(spec, "INSERT")}
  ELSIF TG_OP = 'UPDATE' THEN{_chunked_notify(spec, "UPDATE")}
  ELSIF TG_OP = 'DELETE' THEN{_chunked_notify(spec, "DELETE")}
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
    return (
        f"CREATE TRIGGER {quote_ident(TRIGGER_NAMES[op])} AFTER {op} ON {quote_ident(spec.table)}"
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
    statements = [render_function(spec)]
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


def spec_for_model(model, channel: str = "pgobserve") -> TableSpec:
    """The TableSpec of a Django model (its ``db_table`` and its pk's ``column``)."""
    meta = model._meta
    return TableSpec(table=meta.db_table, pk_column=meta.pk.column, channel=channel)
