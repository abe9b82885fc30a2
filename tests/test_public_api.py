"""The public surface of pgobserve, pinned: which modules are public, what each exports.

A public module's ``__all__`` is its API: every name in it imports and has a docstring of
its own. Every other module is internal, says so in its docstring's first paragraph
("(internal)") or by a leading underscore, and has an ``__all__`` too (empty: nothing in it
is API). Changing this list is changing the API: say so in CHANGELOG.md.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import pgobserve

#: DCRF's layout (consumers, generics, mixins, decorators, permissions, pagination,
#: observer, observer.generics) plus what pgobserve adds (queries, asgi, layers, gc, conf).
PUBLIC = {
    "pgobserve": ["__version__", "observe"],
    "pgobserve.asgi": ["PgObserveRouter"],
    "pgobserve.conf": [
        "autocommit_reads",
        "channel",
        "close_on_logout",
        "coalesce_seconds",
        "database",
        "in_process_listener",
        "leader_lock_key",
        "max_pks_per_message",
        "max_query_rows",
        "max_rows",
        "max_subscriptions",
        "models",
        "observe_related",
        "old_rows",
        "send_queue_high_water",
        "send_queue_timeout",
        "shards",
        "update_diff_max_rows",
    ],
    "pgobserve.consumers": [
        "ActionMissingException",
        "AsyncAPIConsumer",
        "DjangoViewAsConsumer",
        "view_as_consumer",
    ],
    "pgobserve.decorators": ["action", "detached"],
    "pgobserve.gc": ["collect_frozen", "install", "installed", "stats", "uninstall"],
    "pgobserve.generics": ["GenericAsyncAPIConsumer"],
    "pgobserve.layers": ["InMemoryChannelLayer"],
    "pgobserve.mixins": [
        "CreateModelMixin",
        "DeleteModelMixin",
        "ListModelMixin",
        "ObserverModelInstanceMixin",
        "ObserverQueryMixin",
        "PaginatedModelListMixin",
        "PatchModelMixin",
        "RetrieveModelMixin",
        "StreamedPaginatedListMixin",
        "UpdateModelMixin",
    ],
    "pgobserve.observer": ["Action", "ModelObserver", "Observer", "model_observer", "observer"],
    "pgobserve.observer.base_observer": ["BaseObserver"],
    "pgobserve.observer.generics": ["ObserverModelInstanceMixin"],
    "pgobserve.observer.model_observer": ["Action", "ModelObserver"],
    "pgobserve.observer.observer": ["Observer"],
    "pgobserve.pagination": ["WebsocketLimitOffsetPagination"],
    "pgobserve.permissions": [
        "AllowAny",
        "BasePermission",
        "IsAuthenticated",
        "WrappedDRFPermission",
    ],
    "pgobserve.queries": ["ObserverQueryMixin", "QueryTooLarge"],
    "pgobserve.view_consumer": ["DjangoViewAsConsumer", "view_as_consumer"],
}


def all_modules() -> list[str]:
    found = ["pgobserve"]
    found += [m.name for m in pkgutil.walk_packages(pgobserve.__path__, "pgobserve.")]
    return sorted(found)


def is_internal(name: str) -> bool:
    module = importlib.import_module(name)
    first_paragraph = (module.__doc__ or "").strip().split("\n\n")[0]
    underscored = any(part.startswith("_") for part in name.split(".")[1:])
    return underscored or "(internal)" in first_paragraph


def test_the_public_modules_are_exactly_these():
    public = [name for name in all_modules() if not is_internal(name)]
    assert public == sorted(PUBLIC)


@pytest.mark.parametrize("name", all_modules())
def test_every_module_has_an_all(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), name
    if is_internal(name):
        assert module.__all__ == [], f"{name} is internal: its __all__ exports nothing"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_public_modules_all_is_pinned(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == PUBLIC[name]
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_imports_and_has_a_docstring(name):
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), name
    for attribute in module.__all__:
        value = getattr(module, attribute)  # consumers' view names: loaded on first use
        if attribute == "__version__":
            assert isinstance(value, str)
            continue
        # A class's own docstring, not one inherited from its base.
        own = value.__dict__.get("__doc__") if isinstance(value, type) else value.__doc__
        assert (own or "").strip(), f"{name}.{attribute} has no docstring"


def test_the_version_is_written_once():
    """pyproject.toml reads it from ``pgobserve.__version__`` (``dynamic``)."""
    import importlib.metadata
    from pathlib import Path

    project = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert importlib.metadata.version("pgobserve") == pgobserve.__version__
    assert 'dynamic = ["version"]' in project
    assert "\nversion =" not in project.split("[project]")[1].split("\n[")[0]
