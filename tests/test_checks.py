"""pgobserve's system checks (``pgobserve/checks.py``): each id raised when it should be, and
not otherwise. Only ``pgobserve.W002`` reads the database, and only when asked to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from pgobserve import checks, installation

ROOT = Path(__file__).resolve().parent.parent
REDIS = "channels_redis.core.RedisChannelLayer"
GOOD_REDIS = {
    "BACKEND": REDIS,
    "CONFIG": {
        "hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}],
        "capacity": 10_000,
    },
}


@pytest.fixture(autouse=True)
def kept_channel_layers():
    """Overriding CHANNEL_LAYERS drops channels' cached layers: keep the ones other tests
    hold (the checks build no layer)."""
    saved = dict(channel_layers.backends)
    yield
    channel_layers.backends = saved


def found(databases: list[str] | None = None) -> dict[str, list[str]]:
    """id → messages of the pgobserve checks."""
    by_id: dict[str, list[str]] = {}
    for message in run_checks(tags=["pgobserve"], databases=databases):
        by_id.setdefault(message.id, []).append(f"{message.msg} {message.hint or ''}")
    return by_id


def pgobserve(**keys) -> dict:
    """The tests' PGOBSERVE with ``keys`` added; the listener in-process (no W003)."""
    return {**settings.PGOBSERVE, "IN_PROCESS_LISTENER": True, **keys}


def layer(backend: str, **config) -> dict:
    return {"default": {"BACKEND": backend, "CONFIG": config}}


@override_settings(PGOBSERVE=pgobserve())
def test_the_tests_settings_pass_every_check_without_a_database_query():
    # No django_db mark: a query here would fail the test.
    assert found() == {}


def test_e001_a_model_label_that_is_not_installed():
    with override_settings(PGOBSERVE=pgobserve(MODELS=["tasks.Tsk"])):
        (message,) = found()["pgobserve.E001"]
        assert 'names "tasks.Tsk", which is not an installed model' in message
        assert 'did you mean "tasks.Task"?' in message


def test_e002_pgobserve_not_a_dict():
    with override_settings(PGOBSERVE=["tasks.Task"]):
        assert "PGOBSERVE must be a dict, not list." in found()["pgobserve.E002"][0]
        assert "pgobserve.E001" not in found()  # one error for one mistake
    with override_settings(PGOBSERVE=pgobserve()):
        assert "pgobserve.E002" not in found()


def test_e003_no_default_channel_layer():
    with override_settings(CHANNEL_LAYERS={}):
        assert 'CHANNEL_LAYERS has no "default"' in found()["pgobserve.E003"][0]
    with override_settings(CHANNEL_LAYERS={"other": GOOD_REDIS}):
        assert "pgobserve.E003" in found()
    with override_settings(CHANNEL_LAYERS={"default": GOOD_REDIS}):
        assert "pgobserve.E003" not in found()


def test_w001_an_unknown_key_with_a_suggestion():
    with override_settings(PGOBSERVE=pgobserve(MODEL=["tasks.Task"], NOPE=1)):
        messages = found()["pgobserve.W001"]
        assert len(messages) == 2
        assert 'the key "MODEL", which pgobserve does not read. Did you mean "MODELS"?' in (
            "".join(messages)
        )
    with override_settings(PGOBSERVE=pgobserve(PAGE_SIZE=10)):
        assert "pgobserve.W001" not in found()


def test_w001_knows_every_documented_key_and_every_key_the_code_reads():
    table = (ROOT / "docs" / "settings.md").read_text().split("## Other settings")[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))
    assert documented == checks.KNOWN_KEYS
    source = "\n".join(p.read_text() for p in (ROOT / "pgobserve").rglob("*.py"))
    read = set(re.findall(r'_get\("([A-Z_]+)"', source))
    read |= set(re.findall(r'"PGOBSERVE", \{\}\)\.get\("([A-Z_]+)"', source))
    assert read and read <= checks.KNOWN_KEYS


@pytest.mark.django_db
def test_w002_missing_or_outdated_triggers_with_the_database_only():
    with override_settings(PGOBSERVE=pgobserve()):
        installation.install()  # in the test's transaction: rolled back after
        assert "pgobserve.W002" not in found(databases=["default"])
        installation.uninstall()
        assert "pgobserve.W002" not in found()  # no database named: not read
        assert "pgobserve.W002" not in found(databases=["other"])  # not its database
        (message,) = found(databases=["default"])["pgobserve.W002"]
        assert "have missing or outdated triggers" in message
        assert "tasks_task" in message and "`manage.py pgobserve install`" in message
        installation.install()
    # Another trigger body (here a setting that changes it): outdated.
    with override_settings(PGOBSERVE=pgobserve(UPDATE_DIFF_MAX_ROWS=7)):
        (message,) = found(databases=["default"])["pgobserve.W002"]
        assert "tasks_task" in message


@pytest.mark.django_db
def test_w002_waits_while_migrations_are_pending():
    """``migrate`` runs its checks before it applies its migrations, which may install the
    triggers (a pgobserve_triggers migration): no warning while any is pending."""
    from django.db import connection

    with override_settings(PGOBSERVE=pgobserve()):
        installation.uninstall()  # in the test's transaction: rolled back after
        assert "pgobserve.W002" in found(databases=["default"])
        with connection.cursor() as cursor:  # the tasks app's last migration: pending
            cursor.execute(
                "DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM"
                " django_migrations WHERE app = 'tasks')"
            )
        assert "pgobserve.W002" not in found(databases=["default"])


@override_settings(PGOBSERVE={**settings.PGOBSERVE, "IN_PROCESS_LISTENER": False})
def test_w003_an_in_memory_layer_without_the_in_process_listener():
    with override_settings(CHANNEL_LAYERS=layer("pgobserve.layers.InMemoryChannelLayer")):
        assert "reaches only its own process" in found()["pgobserve.W003"][0]
    with override_settings(CHANNEL_LAYERS={"default": GOOD_REDIS}):
        assert "pgobserve.W003" not in found()
    with override_settings(
        CHANNEL_LAYERS=layer("pgobserve.layers.InMemoryChannelLayer"),
        PGOBSERVE=pgobserve(IN_PROCESS_LISTENER=True),
    ):
        assert "pgobserve.W003" not in found()


@override_settings(PGOBSERVE=pgobserve())
def test_w004_channels_in_memory_layer():
    with override_settings(CHANNEL_LAYERS=layer("channels.layers.InMemoryChannelLayer")):
        assert "pgobserve.layers.InMemoryChannelLayer" in found()["pgobserve.W004"][0]
    with override_settings(CHANNEL_LAYERS=layer("pgobserve.layers.InMemoryChannelLayer")):
        assert "pgobserve.W004" not in found()


@override_settings(PGOBSERVE=pgobserve())
def test_w005_channels_redis_capacity_at_its_default():
    hosts = GOOD_REDIS["CONFIG"]["hosts"]
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=hosts)):
        assert "a capacity of 100 messages" in found()["pgobserve.W005"][0]
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=hosts, capacity=100)):
        assert "pgobserve.W005" in found()
    with override_settings(CHANNEL_LAYERS={"default": GOOD_REDIS}):
        assert "pgobserve.W005" not in found()


@override_settings(PGOBSERVE=pgobserve())
def test_w006_channels_redis_socket_timeout():
    timed = [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 5}]
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=timed, capacity=10_000)):
        assert 'socket_timeout": None' in found()["pgobserve.W006"][0]
    with override_settings(CHANNEL_LAYERS={"default": GOOD_REDIS}):
        assert "pgobserve.W006" not in found()
    # A host without the key gets redis-py's default (5 s from redis-py 8 on).
    from redis.asyncio import connection

    default = getattr(connection, "DEFAULT_SOCKET_TIMEOUT", None)
    bare = layer(REDIS, hosts=["redis://127.0.0.1:6379/0"], capacity=10_000)
    with override_settings(CHANNEL_LAYERS=bare):
        assert ("pgobserve.W006" in found()) is (default is not None)
