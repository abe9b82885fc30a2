"""Django system checks of pgobserve's configuration (internal).

Every ``manage.py`` command runs them; each says what is wrong and what to do (the ids
are listed in ``docs/checks.md``). Errors (``pgobserve.E0xx``) stop the command; warnings
(``pgobserve.W0xx``) are printed and may be silenced with ``SILENCED_SYSTEM_CHECKS``. Only
``check_triggers`` reads the database, and only when asked to (``manage.py check --database
default``, and ``migrate``, which passes its database): importing or starting a project
never does.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.utils.module_loading import import_string

__all__: list[str] = []  # internal: no public API

#: Every key of ``settings.PGOBSERVE`` that pgobserve reads (``docs/settings.md``).
KNOWN_KEYS = frozenset(
    {
        "MODELS", "OLD_ROWS", "IN_PROCESS_LISTENER", "DATABASE", "CHANNEL", "SHARDS",
        "MAX_PKS_PER_MESSAGE", "COALESCE_MS", "UPDATE_DIFF_MAX_ROWS", "MAX_QUERY_ROWS",
        "LEADER_LOCK_KEY", "PAGE_SIZE", "DEFAULT_PAGINATION_CLASS", "OBSERVE_RELATED",
        "CLOSE_ON_LOGOUT", "MAX_SUBSCRIPTIONS_PER_SOCKET", "MAX_ROWS_PER_SOCKET",
        "SEND_QUEUE_HIGH_WATER", "SEND_QUEUE_TIMEOUT", "AUTOCOMMIT_READS",
    }
)  # fmt: skip

#: channels-redis's default ``capacity``: a burst of change messages past it is dropped.
REDIS_DEFAULT_CAPACITY = 100


def register() -> None:
    """Register every check under the ``pgobserve`` tag (``PgObserveConfig.ready``)."""
    for check in (check_settings, check_observed_models, check_channel_layer):
        checks.register(check, "pgobserve")
    checks.register(check_triggers, "pgobserve", checks.Tags.database)


def _pgobserve_setting() -> Any:
    return getattr(settings, "PGOBSERVE", {})


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[Any]:
    """``PGOBSERVE`` is a dict (E002) whose keys are all known (W001, with a suggestion)."""
    value = _pgobserve_setting()
    if not isinstance(value, dict):
        return [
            checks.Error(
                f"PGOBSERVE must be a dict, not {type(value).__name__}.",
                hint='Write PGOBSERVE = {"MODELS": ["app_label.ModelName"]}.',
                id="pgobserve.E002",
            )
        ]
    found = []
    for key in value:
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(str(key), sorted(KNOWN_KEYS), n=1)
        hint = f'Did you mean "{close[0]}"?' if close else "See pgobserve's settings page."
        found.append(
            checks.Warning(
                f'PGOBSERVE has the key "{key}", which pgobserve does not read.',
                hint=hint,
                id="pgobserve.W001",
            )
        )
    return found


def check_observed_models(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[Any]:
    """``PGOBSERVE["MODELS"]`` and ``["OLD_ROWS"]`` name installed models that can carry
    triggers (E001). A check, not an exception at startup: every ``manage.py`` command
    then reports a typo as one readable error instead of a traceback."""
    if not isinstance(_pgobserve_setting(), dict):
        return []  # E002
    from . import registry

    try:
        registry.observed_models()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgobserve.E001")]
    return []


def _layer_class(backend: Any) -> type | None:
    if isinstance(backend, type):
        return backend
    try:
        found = import_string(str(backend))
    except ImportError:
        return None  # channels says so when the layer is used
    return found if isinstance(found, type) else None


def _subclass(cls: type, path: str) -> bool:
    try:
        base = import_string(path)
    except ImportError:
        return False
    return issubclass(cls, base)


def check_channel_layer(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[Any]:
    """The default channel layer exists (E003) and can carry the change feed: it reaches
    other processes or the listener runs in-process (W003), it is not channels' own
    in-memory layer (W004), and channels-redis is not left at ``capacity`` 100 (W005) or
    with a ``socket_timeout`` (W006)."""
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    config = layers.get("default") if isinstance(layers, dict) else None
    if not isinstance(config, dict) or "BACKEND" not in config:
        return [
            checks.Error(
                'pgobserve needs a channel layer, and CHANNEL_LAYERS has no "default".',
                hint='Set CHANNEL_LAYERS = {"default": {"BACKEND": '
                '"pgobserve.layers.InMemoryChannelLayer"}} for one process, or channels-redis '
                "for several.",
                id="pgobserve.E003",
            )
        ]
    cls = _layer_class(config["BACKEND"])
    if cls is None:
        return []
    options = config.get("CONFIG") or {}
    found = []
    if _subclass(cls, "channels.layers.InMemoryChannelLayer"):
        from . import conf

        if isinstance(_pgobserve_setting(), dict) and not conf.in_process_listener():
            found.append(
                checks.Warning(
                    "The default channel layer is in memory, which reaches only its own "
                    'process, and PGOBSERVE["IN_PROCESS_LISTENER"] is off: the changes a '
                    "`manage.py pgobserve listen` process sends reach no socket.",
                    hint='Set PGOBSERVE["IN_PROCESS_LISTENER"] = True for one process, or use '
                    "channels-redis and run `manage.py pgobserve listen`.",
                    id="pgobserve.W003",
                )
            )
        if not _subclass(cls, "pgobserve.layers.InMemoryChannelLayer"):
            found.append(
                checks.Warning(
                    "The default channel layer is channels' InMemoryChannelLayer, which sweeps "
                    "every channel on each receive: one change pushed to N sockets costs N².",
                    hint='Use "pgobserve.layers.InMemoryChannelLayer" as its BACKEND.',
                    id="pgobserve.W004",
                )
            )
    if _subclass(cls, "channels_redis.core.RedisChannelLayer"):
        capacity = options.get("capacity", REDIS_DEFAULT_CAPACITY)
        if isinstance(capacity, int) and capacity <= REDIS_DEFAULT_CAPACITY:
            found.append(
                checks.Warning(
                    f"The channels-redis layer has a capacity of {capacity} messages per "
                    "channel: a burst of change messages past it is dropped silently.",
                    hint='Set "capacity": 10_000 in CHANNEL_LAYERS["default"]["CONFIG"].',
                    id="pgobserve.W005",
                )
            )
        timeouts = [_socket_timeout(host) for host in _redis_hosts(options.get("hosts"))]
        if any(timeout is not None for timeout in timeouts):
            found.append(
                checks.Warning(
                    "A channels-redis host has a socket_timeout: an idle socket's receive() "
                    "times out and the consumer waits out a Redis outage that is not one.",
                    hint='Give every host as {"address": REDIS_URL, "socket_timeout": None}.',
                    id="pgobserve.W006",
                )
            )
    return found


def _redis_hosts(hosts: Any) -> list[Any]:
    """The hosts as channels-redis decodes them (no hosts: one on localhost)."""
    if not hosts:
        return [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        return []  # channels-redis refuses it with its own message
    return [host if isinstance(host, dict) else {} for host in hosts]


def _socket_timeout(host: dict[str, Any]) -> Any:
    """The socket_timeout a host's connections get: its own, else redis-py's default
    (5 s from redis-py 8 on, None before)."""
    if "socket_timeout" in host:
        return host["socket_timeout"]
    try:
        from redis.asyncio import connection
    except ImportError:
        return None
    return getattr(connection, "DEFAULT_SOCKET_TIMEOUT", None)


def _pending_migrations(alias: str) -> set[str]:
    """The apps with migrations not yet applied to ``alias`` (none known if the migration
    graph cannot be loaded: ``migrate`` reports that itself)."""
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[alias])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        raise
    except Exception:  # a broken graph or migration module: not this check's to report
        return set()
    return {migration.app_label for migration, _backwards in plan}


def check_triggers(
    app_configs: Sequence[Any] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Every observed table of ``PGOBSERVE["DATABASE"]`` has current triggers (W002).
    Reads the database, so it runs only when ``databases`` names that alias (``manage.py
    check --database default``, ``migrate``); a table that does not exist yet is left to
    its migration, and so is everything while an app of an observed model has migrations
    pending (``migrate`` runs its checks before it applies them: a pgobserve_triggers
    migration may be among them)."""
    from . import conf, installation, registry, sql

    if not isinstance(_pgobserve_setting(), dict):
        return []
    alias = conf.database()
    if not databases or alias not in databases:
        return []
    try:
        registry.load_consumers()  # their model observers decide which tables keep old rows
        if _pending_migrations(alias) & {m._meta.app_label for m in registry.observed_models()}:
            return []
        entries = installation.status(alias)
        tables = set(connections[alias].introspection.table_names())
    except ImproperlyConfigured:
        return []  # E001 says why
    except DatabaseError as exc:
        return [
            checks.Warning(
                f'pgobserve could not read the triggers of database "{alias}": {exc}'.strip(),
                hint="Run `manage.py pgobserve status` once the database is reachable.",
                id="pgobserve.W002",
            )
        ]
    stale = sorted(
        entry.table
        for entry in entries
        if entry.state == installation.OUTDATED
        or (entry.state == installation.MISSING and sql.stored_name(entry.table) in tables)
    )
    if not stale:
        return []
    return [
        checks.Warning(
            f"{len(stale)} observed table(s) have missing or outdated triggers and send no "
            f"changes: {', '.join(stale)}.",
            hint="Run `manage.py pgobserve install` (or migrate, if a pgobserve_triggers "
            "migration installs them).",
            id="pgobserve.W002",
        )
    ]
