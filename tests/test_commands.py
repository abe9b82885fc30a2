"""``manage.py pgobserve install|uninstall|status|makemigration`` on the test database.

These tests run inside a transaction that is rolled back (PostgreSQL DDL is transactional),
so whatever they install, tamper with or remove is restored for the next test.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import re
import sys
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection, models
from django.test import override_settings
from django.test.utils import isolate_apps

from pgobserve import installation, registry, sql
from pgobserve.installation import INSTALLED, MISSING, ORPHANED, OUTDATED
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db

OBSERVED = {"testapp_item", "testapp_uuiditem", "testapp_textitem", 'we"ird; drop table x; --'}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("pgobserve", *args, stdout=out, no_color=True)
    return out.getvalue()


def objects() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger
            WHERE tgname LIKE 'pgobserve\\_%%' AND NOT tgisinternal
            UNION ALL
            SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'pgobserve\\_%%'
            ORDER BY 1
            """
        )
        return [row[0] for row in cursor.fetchall()]


def states() -> dict[str, str]:
    return {s.table: s.state for s in installation.status()}


def test_the_session_install_covers_every_observed_table():
    assert {t for t, s in states().items() if s == INSTALLED} >= OBSERVED
    assert len(objects()) == 5 * len(registry.observed_models())  # 4 triggers + 1 function


def test_install_is_idempotent():
    assert "Nothing to do" in run("install")
    before = objects()
    assert "Nothing to do" in run("install")
    assert objects() == before


def old_rows_table_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pgobserve_old_row') IS NOT NULL")
        return cursor.fetchone()[0]


def test_dry_run_prints_the_sql_and_changes_nothing():
    assert old_rows_table_exists()  # the session install: auth_user keeps old rows
    run("uninstall")
    assert objects() == []
    assert not old_rows_table_exists()  # uninstall leaves nothing of pgobserve behind
    out = run("install", "--dry-run")
    assert out.count("CREATE TRIGGER") == 4 * len(registry.observed_models())
    assert 'CREATE TRIGGER "pgobserve_update" AFTER UPDATE ON "we""ird; drop table x; --"' in out
    assert objects() == []
    out = run("uninstall", "--dry-run")
    assert "Nothing to do" in out
    run("install")
    assert set(states().values()) == {INSTALLED}


def test_status_shows_installed_outdated_missing_orphaned_and_queue_usage():
    with connection.cursor() as cursor:
        cursor.execute("COMMENT ON TRIGGER pgobserve_update ON testapp_item IS 'pgobserve:v0:x'")
        for statement in sql.render_drop(sql.TableSpec("testapp_uuiditem", "id")):
            cursor.execute(statement)
        cursor.execute("CREATE TABLE pgobserve_orphan_t (id int PRIMARY KEY)")
        for statement in sql.render_install(sql.TableSpec("pgobserve_orphan_t", "id")):
            cursor.execute(statement)
    mine = {
        t: s for t, s in states().items() if t in OBSERVED | {"testapp_sentinel"} or "orph" in t
    }
    assert mine == {
        "testapp_item": OUTDATED,
        "testapp_uuiditem": MISSING,
        "testapp_textitem": INSTALLED,
        'we"ird; drop table x; --': INSTALLED,
        "testapp_sentinel": INSTALLED,
        "pgobserve_orphan_t": ORPHANED,
    }
    out = run("status")
    assert "OUTDATED" in out and "MISSING" in out and "ORPHANED" in out
    assert "Notification queue usage: 0.0%" in out
    assert "Run `manage.py pgobserve install`" in out

    out = run("install")
    assert "Installed: testapp_item" in out and "Installed: testapp_uuiditem" in out
    assert "testapp_textitem" not in out
    assert states()["pgobserve_orphan_t"] == ORPHANED  # install never touches other tables

    out = run("uninstall")
    assert "Removed: pgobserve_orphan_t" in out
    assert objects() == []
    assert set(states().values()) == {MISSING}


def test_a_dropped_trigger_makes_the_table_outdated():
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER pgobserve_truncate ON testapp_textitem")
    assert states()["testapp_textitem"] == OUTDATED
    run("install")
    assert states()["testapp_textitem"] == INSTALLED


def test_an_unknown_model_label_fails_loudly_with_a_suggestion():
    with override_settings(PGOBSERVE={"MODELS": ["testapp.Iten"]}):
        with pytest.raises(ImproperlyConfigured, match='did you mean "testapp.Item"'):
            registry.observed_models()
        with pytest.raises(ImproperlyConfigured, match="testapp.Iten"):
            run("status")
    with override_settings(PGOBSERVE={"MODELS": ["nonsense"]}):
        with pytest.raises(ImproperlyConfigured, match='"nonsense", which is not an installed'):
            registry.observed_models()


def test_a_composite_primary_key_is_refused_with_a_clear_message():
    if not hasattr(models, "CompositePrimaryKey"):
        pytest.skip("CompositePrimaryKey needs Django 5.2")
    with isolate_apps("tests.testapp"):

        class Pair(models.Model):
            pk = models.CompositePrimaryKey("a", "b")
            a = models.IntegerField()
            b = models.IntegerField()

            class Meta:
                app_label = "testapp"

        registry.observe(Pair)
        try:
            with pytest.raises(ImproperlyConfigured, match="composite primary keys"):
                registry.observed_models()
        finally:
            registry._decorated.remove(Pair)


def test_changing_which_tables_keep_old_rows_makes_them_outdated_until_install(monkeypatch):
    """Old rows change a table's triggers: ``status`` must say so, ``install`` redo them."""
    user = get_user_model()
    # auth.User stops keeping old rows: not in the setting, nor marked by an observer that
    # an earlier test defined; testapp.Item starts.
    monkeypatch.setattr(registry, "_old_rows", [m for m in registry._old_rows if m is not user])
    old_rows = [label for label in settings.PGOBSERVE["OLD_ROWS"] if label != "auth.User"]
    before = states()
    assert before["testapp_item"] == before["auth_user"] == INSTALLED
    assert not registry.keeps_old_rows(Item)
    with override_settings(
        PGOBSERVE={**settings.PGOBSERVE, "OLD_ROWS": [*old_rows, "testapp.Item"]}
    ):
        assert states() == {**before, "testapp_item": OUTDATED, "auth_user": OUTDATED}
        out = run("status")
        assert re.search(r"^OUTDATED +testapp_item ", out, re.M)
        assert re.search(r"^OUTDATED +auth_user ", out, re.M)
        out = run("install")
        assert "Installed: testapp_item" in out and "Installed: auth_user" in out
        assert "testapp_textitem" not in out
        assert states() == {**before, "testapp_item": INSTALLED, "auth_user": INSTALLED}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgname = 'pgobserve_truncate' AND tgrelid::regclass::text = ANY(%s)",
                [["testapp_item", "auth_user"]],
            )
            truncate = {table: " BEFORE " in definition for table, definition in cursor}
            assert truncate == {"testapp_item": True, "auth_user": False}
            Item.objects.bulk_create([Item(name="a"), Item(name="b")])
            Item.objects.update(value=1)  # in this test's transaction
            cursor.execute(
                f"SELECT count(*) FROM {sql.quote_ident(sql.OLD_ROWS)}"
                " WHERE tbl = 'testapp_item' AND xid = pg_current_xact_id()"
            )
            assert cursor.fetchone()[0] == 2
        run("uninstall")
        assert objects() == []


def test_install_and_status_take_a_database_alias():
    assert "Nothing to do" in run("install", "--database", "default")
    assert "INSTALLED" in run("status", "--database", "default")
    with pytest.raises(Exception, match="nope"):
        run("status", "--database", "nope")


# makemigration -----------------------------------------------------------------------------

MODELS_PY = """
from django.db import models


class Thing(models.Model):
    name = models.CharField(max_length=10)
"""

INITIAL = """
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=10)),
            ],
        ),
    ]
"""


@pytest.fixture
def scratch_app(tmp_path, monkeypatch):
    """A throwaway app with one migration, installed for the test only: makemigration writes
    into its folder, never into the repository."""
    name = f"pgobserve_scratch_{uuid.uuid4().hex[:8]}"
    package = tmp_path / name
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODELS_PY)
    (package / "migrations" / "__init__.py").write_text("")
    (package / "migrations" / "0001_initial.py").write_text(INITIAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    apps_setting = [*settings.INSTALLED_APPS, name]
    models = [*settings.PGOBSERVE["MODELS"], f"{name}.Thing"]
    with override_settings(INSTALLED_APPS=apps_setting, PGOBSERVE={"MODELS": models}):
        yield name, package
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_makemigration_then_migrate_and_back_leaves_nothing_behind(scratch_app):
    name, package = scratch_app
    table = f"{name}_thing"
    before = objects()
    call_command("migrate", name, verbosity=0)
    assert states()[table] == MISSING

    out = run("makemigration", name)
    written = package / "migrations" / "0002_pgobserve_triggers.py"
    assert str(written) in out
    text = written.read_text()
    assert f"dependencies = [('{name}', '0001_initial')]" in text
    assert "testapp" not in text  # only this app's tables
    importlib.invalidate_caches()

    call_command("migrate", name, verbosity=0)
    assert states()[table] == INSTALLED  # the frozen SQL is the current SQL
    assert len(objects()) == len(before) + 5

    call_command("migrate", name, "0001", verbosity=0)
    assert states()[table] == MISSING
    assert objects() == before
    call_command("migrate", name, "zero", verbosity=0)
    assert objects() == before


def test_makemigration_of_a_model_with_old_rows_creates_their_table(scratch_app):
    name, package = scratch_app
    table = f"{name}_thing"
    before = objects()
    old_rows = {**settings.PGOBSERVE, "OLD_ROWS": [f"{name}.Thing"]}
    with override_settings(PGOBSERVE=old_rows):
        call_command("migrate", name, verbosity=0)
        run("makemigration", name)
        importlib.invalidate_caches()
        migration = importlib.import_module(f"{name}.migrations.0002_pgobserve_triggers")
        create = f"CREATE UNLOGGED TABLE IF NOT EXISTS {sql.quote_ident(sql.OLD_ROWS)} ("
        assert migration.FORWARD[0].startswith(create)
        assert f'CREATE TRIGGER "pgobserve_truncate" BEFORE TRUNCATE ON "{table}"' in "\n".join(
            migration.FORWARD
        )
        # The table is shared by every table that keeps old rows: reversing leaves it.
        assert not any(sql.OLD_ROWS in statement for statement in migration.BACKWARD)
        call_command("migrate", name, verbosity=0)
        assert states()[table] == INSTALLED
        call_command("migrate", name, "zero", verbosity=0)
        assert objects() == before


def test_makemigration_refuses_an_app_without_observed_models():
    with pytest.raises(CommandError, match="No observed model"):
        run("makemigration", "contenttypes")
    with pytest.raises(CommandError):
        run("makemigration", "no_such_app")


def test_uninstall_also_removes_functions_whose_triggers_were_dropped_by_hand():
    with connection.cursor() as cursor:
        for name in sql.TRIGGER_NAMES.values():
            cursor.execute(f'DROP TRIGGER "{name}" ON testapp_textitem')
    assert "function " + sql.function_name("testapp_textitem") in objects()
    out = run("uninstall")
    assert "functions without triggers" in out
    assert objects() == []
    run("install")
    assert set(states().values()) == {INSTALLED}


def test_the_example_trigger_migration_matches_the_current_template():
    """A template change must come with a regenerated example migration (makemigration)."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("tasks.migrations.0002_pgobserve_triggers")
    models = [apps.get_model("tasks", "Project"), apps.get_model("tasks", "Task")]
    # As the example's settings have it: no model observer, so no old rows (the tests
    # keep old rows of tasks.Task for their own model observers).
    specs = [dataclasses.replace(installation.spec_for(m), old_rows=False) for m in models]
    assert migration.FORWARD == [s for spec in specs for s in sql.render_install(spec)]
    assert migration.BACKWARD == [s for spec in specs for s in sql.render_drop(spec)]


def no_old_rows() -> None:
    """Empty the old-row table (in the test's transaction): the session's other tests left
    rows that no listener swept, whose age would count."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {sql.quote_ident(sql.OLD_ROWS)}")


def test_status_check_fails_until_every_table_is_current():
    no_old_rows()
    run("status", "--check")  # the session install: all current
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER pgobserve_insert ON testapp_item")
    with pytest.raises(CommandError, match="no current triggers"):
        run("status", "--check")
    run("install")
    run("status", "--check")


def test_status_says_when_old_rows_pile_up_without_a_listener():
    """Every UPDATE and DELETE of a model-observed table keeps a row that a leading listener
    deletes 2 minutes later: rows older than that (10 minutes) mean none runs."""
    no_old_rows()
    assert "Oldest row kept" not in run("status")
    old_rows = sql.quote_ident(sql.OLD_ROWS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {old_rows} (xid, tbl, image, at)"
            " VALUES (pg_current_xact_id(), 'tasks_task', '{}', now() - interval '1 minute')"
        )
    assert "written 60 s ago" in run("status")
    run("status", "--check")  # a listener has two minutes to delete it
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {old_rows} SET at = now() - interval '1 hour'")
    out = run("status")
    assert "written 3600 s ago" in out and "No listener deletes them" in out
    with pytest.raises(CommandError, match="Old rows pile up"):
        run("status", "--check")


def test_listen_warns_at_startup_about_tables_without_triggers(caplog):
    """An observed table without triggers sends nothing; the listener says so when it
    starts (e.g. after an upgrade that observes related tables, before `install`)."""
    from pgobserve.management.commands.pgobserve import Command

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute('DROP TRIGGER "pgobserve_update" ON "tasks_project"')
    with caplog.at_level("WARNING", logger="pgobserve.listener"):
        Command()._warn_untriggered(None)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pgobserve.listener"]
    assert len(warnings) == 1 and "tasks_project" in warnings[0], warnings
    assert "pgobserve install" in warnings[0]
