"""Install, uninstall and inspect the generated triggers in a database (internal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connections, transaction

from . import conf, registry, sql

if TYPE_CHECKING:
    from django.db import models

__all__: list[str] = []  # internal: no public API

INSTALLED, OUTDATED, MISSING, ORPHANED = "installed", "outdated", "missing", "orphaned"


@dataclass(frozen=True)
class TableStatus:
    table: str
    state: str  # INSTALLED, OUTDATED, MISSING or ORPHANED
    model: str | None = None


def spec_for(model: type[models.Model]) -> sql.TableSpec:
    """The TableSpec of an observed model under the current settings."""
    return sql.spec_for_model(
        model,
        conf.channel(),
        conf.update_diff_max_rows(),
        digest=registry.has_secret_pk(model),
        old_rows=registry.keeps_old_rows(model),
    )


def specs() -> list[sql.TableSpec]:
    return [spec_for(m) for m in registry.observed_models()]


def _installed_comments(alias: str) -> dict[str, dict[str, str | None]]:
    """table → {trigger name → comment} for every pgobserve trigger in the search path."""
    query = """
        SELECT c.relname, t.tgname, obj_description(t.oid, 'pg_trigger')
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgname = ANY(%s) AND NOT t.tgisinternal
          AND n.nspname = ANY(current_schemas(false))
    """
    found: dict[str, dict[str, str | None]] = {}
    with connections[alias].cursor() as cursor:
        cursor.execute(query, [list(sql.TRIGGER_NAMES.values())])
        for table, trigger, comment in cursor.fetchall():
            found.setdefault(table, {})[trigger] = comment
    return found


def status(alias: str | None = None) -> list[TableStatus]:
    alias = alias or conf.database()
    installed = _installed_comments(alias)
    result = []
    for model in registry.observed_models():
        spec = spec_for(model)
        # The catalog has the name PostgreSQL kept: a longer db_table is cut to 63 bytes.
        comments = installed.pop(sql.stored_name(spec.table), {})
        expected = sql.signature(spec)
        if not comments:
            state = MISSING
        elif set(comments) == set(sql.TRIGGER_NAMES.values()) and set(comments.values()) == {
            expected
        }:
            state = INSTALLED
        else:
            state = OUTDATED
        result.append(TableStatus(spec.table, state, model._meta.label))
    result += [TableStatus(table, ORPHANED) for table in sorted(installed)]
    return result


def install(alias: str | None = None, *, dry_run: bool = False) -> list[tuple[str, list[str]]]:
    """Install or refresh the triggers of every observed table that is not current.

    Returns (table, statements) for each table changed (or, with ``dry_run``, to change).
    """
    alias = alias or conf.database()
    current = {s.table for s in status(alias) if s.state == INSTALLED}
    done = []
    for spec in specs():
        if spec.table in current:
            continue
        statements = sql.render_install(spec)
        if not dry_run:
            _execute(alias, statements)
        done.append((spec.table, statements))
    return done


def uninstall(alias: str | None = None, *, dry_run: bool = False) -> list[tuple[str, list[str]]]:
    """Remove pgobserve's triggers and functions from observed and orphaned tables, and
    the table of old rows (``sql.OLD_ROWS``)."""
    alias = alias or conf.database()
    done = []
    for entry in status(alias):
        if entry.state == MISSING:
            continue
        statements = sql.render_drop(sql.TableSpec(entry.table, "unused", conf.channel()))
        if not dry_run:
            _execute(alias, statements)
        done.append((entry.table, statements))
    stray = [
        f"DROP FUNCTION IF EXISTS {sql.quote_ident(name)}()" for name in _stray_functions(alias)
    ]
    if stray:
        if not dry_run:
            _execute(alias, stray)
        done.append(("(functions without triggers)", stray))
    if _table_exists(alias, sql.OLD_ROWS):
        drop = [f"DROP TABLE IF EXISTS {sql.quote_ident(sql.OLD_ROWS)}"]
        if not dry_run:
            _execute(alias, drop)
        done.append((sql.OLD_ROWS, drop))
    return done


def _table_exists(alias: str, table: str) -> bool:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.quote_ident(table)])
        return bool(cursor.fetchone()[0])


def _execute(alias: str, statements: list[str]) -> None:
    """Run ``statements`` in one transaction: a table is changed entirely or not at all."""
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _stray_functions(alias: str) -> list[str]:
    """pgobserve notify functions no trigger uses any more (their triggers were dropped by
    hand, or their table was): recognised by the version comment pgobserve puts on them."""
    query = """
        SELECT p.proname FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(current_schemas(false))
          AND obj_description(p.oid, 'pg_proc') LIKE %s
          AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)
    """
    with connections[alias].cursor() as cursor:
        cursor.execute(query, [sql.COMMENT_PREFIX + "%"])
        return sorted(row[0] for row in cursor.fetchall())


def queue_usage(alias: str | None = None) -> float:
    """Fraction of PostgreSQL's NOTIFY queue in use: near 1.0 means a listener is stuck."""
    with connections[alias or conf.database()].cursor() as cursor:
        cursor.execute("SELECT pg_notification_queue_usage()")
        return float(cursor.fetchone()[0])


#: Old rows older than this (seconds) mean no listener sweeps them: a leading listener
#: deletes them ``observer.feed.KEEP_OLD_ROWS`` (2 minutes) after they were written.
OLD_ROWS_STALE_AFTER = 600.0


def oldest_old_row_age(alias: str | None = None) -> float | None:
    """Seconds since the oldest row of ``pgobserve_old_row`` was written; None when there is
    none (or no such table). Without a listener they pile up: every UPDATE and DELETE of a
    model-observed table writes one."""
    table = sql.quote_ident(sql.OLD_ROWS)
    with connections[alias or conf.database()].cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [table])
        if cursor.fetchone()[0] is None:
            return None
        # By id, not by ``at``: the primary key's index finds it without a scan.
        cursor.execute(f"SELECT extract(epoch FROM now() - at) FROM {table} ORDER BY id LIMIT 1")
        row = cursor.fetchone()
        return None if row is None else max(0.0, float(row[0]))
