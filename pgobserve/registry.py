"""Which models are observed (internal): ``PGOBSERVE["MODELS"]`` and those marked ``@observe``."""

from __future__ import annotations

import difflib
from importlib import import_module
from typing import TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from . import conf

__all__: list[str] = []  # internal: no public API

M = TypeVar("M", bound=type[models.Model])

_decorated: list[type[models.Model]] = []
#: Models of the model observers created in this process (``observer.model_observer``).
_old_rows: list[type[models.Model]] = []


def observe(model: M) -> M:
    """Class decorator: observe this model as if it were listed in ``PGOBSERVE["MODELS"]``."""
    if not isinstance(model, type) or not issubclass(model, models.Model):
        raise TypeError("@pgobserve.observe decorates Django model classes")
    if model not in _decorated:
        _decorated.append(model)
    return model


def keep_old_rows(model: type[models.Model]) -> None:
    """Observe ``model`` and keep its rows as they were before each change (what a model
    observer needs); called by ``model_observer`` when a consumer class is defined."""
    if model not in _old_rows:
        _old_rows.append(model)
    observe(model)


def old_rows_models() -> list[type[models.Model]]:
    """Models whose triggers keep old rows: ``PGOBSERVE["OLD_ROWS"]`` and the models of
    the model observers defined so far (the commands import ``ASGI_APPLICATION`` first,
    see ``load_consumers``)."""
    found = [_resolve(label, "OLD_ROWS") for label in conf.old_rows()]
    return found + [m for m in _old_rows if m not in found]


def keeps_old_rows(model: type[models.Model]) -> bool:
    return (model._meta.concrete_model or model) in old_rows_models()


def load_consumers() -> None:
    """Import the project's ``ASGI_APPLICATION``, so the consumers it routes to, and the
    model observers they define, are known (the commands and the listener need them)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return
    try:
        import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"pgobserve could not import ASGI_APPLICATION {path!r} to find the model"
            f" observers of its consumers: {exc}"
        ) from exc


def _resolve(label: str, setting: str = "MODELS") -> type[models.Model]:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        known = [m._meta.label for m in apps.get_models()]
        hint = difflib.get_close_matches(label, known, n=1)
        did_you_mean = f'; did you mean "{hint[0]}"?' if hint else "."
        raise ImproperlyConfigured(
            f'PGOBSERVE["{setting}"] names "{label}", which is not an installed model'
            f'{did_you_mean} Use "app_label.ModelName".'
        ) from None


def identity_models() -> list[type[models.Model]]:
    """The session and user models whose changes close sockets (``conf.close_on_logout``):
    database-backed sessions, and the user model, when their apps are installed."""
    if not conf.close_on_logout():
        return []
    found: list[type[models.Model]] = []
    if apps.is_installed("django.contrib.sessions"):
        from django.conf import settings

        engine = import_module(settings.SESSION_ENGINE)
        store = getattr(engine, "SessionStore", None)
        get_model = getattr(store, "get_model_class", None)
        if get_model is not None:  # database-backed (db, cached_db): its rows can be watched
            found.append(get_model())
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth import get_user_model

        found.append(get_user_model())
    return found


def has_secret_pk(model: type[models.Model]) -> bool:
    """Sessions: their pk is the session key, a secret that must never be sent in a NOTIFY
    payload (any role that LISTENs would read it); the trigger sends its md5 instead."""
    from django.contrib.sessions.base_session import AbstractBaseSession

    return issubclass(model, AbstractBaseSession)


def related_models(observed: list[type[models.Model]]) -> list[type[models.Model]]:
    """What ``observed`` models reach in one step (``conf.observe_related``): the targets of
    their forward foreign keys and one-to-one fields (``project__owner`` reads the owner
    column of the project table) and the ``through`` tables of their many-to-many fields.
    Unmanaged models (views, tables of other programs) and composite pks are left to
    ``MODELS``, where an explicit entry fails loudly if they cannot carry triggers."""
    found: list[type[models.Model]] = []
    for model in observed:
        for field in model._meta.get_fields():
            if not (field.is_relation and field.concrete):
                continue  # reverse relations and generic foreign keys
            if field.many_to_many:
                target = getattr(field.remote_field, "through", None)
            elif field.many_to_one or field.one_to_one:
                target = field.related_model
            else:
                continue
            if not (isinstance(target, type) and issubclass(target, models.Model)):
                continue  # a lazy reference to a model that is not installed
            concrete = target._meta.concrete_model or target
            meta = concrete._meta
            if meta.managed and getattr(meta.pk, "column", None) is not None:
                found.append(concrete)
    return found


def observed_models() -> list[type[models.Model]]:
    """Every observed concrete model, in settings order then decorator order, then the
    session and user models (``identity_models``), then the models the first two reach
    (``related_models``), no duplicates."""
    found: list[type[models.Model]] = []
    chosen = [_resolve(label) for label in conf.models()] + _decorated + old_rows_models()
    related = related_models(chosen) if conf.observe_related() else []
    for model in chosen + identity_models() + related:
        meta = model._meta
        if meta.abstract or meta.proxy:
            raise ImproperlyConfigured(
                f"{meta.label} cannot be observed: only concrete tables carry triggers "
                "(observe the concrete model a proxy points at)."
            )
        if getattr(meta.pk, "column", None) is None:
            raise ImproperlyConfigured(
                f"{meta.label} cannot be observed: its primary key has no single column "
                "(composite primary keys are not supported); give it a single-column pk."
            )
        if model not in found:
            found.append(model)
    return found


def observed_tables() -> dict[str, type[models.Model]]:
    """``db_table`` → model for every observed model."""
    return {m._meta.db_table: m for m in observed_models()}


def is_observed(model: type[models.Model]) -> bool:
    concrete = model._meta.concrete_model or model
    return concrete in observed_models()


def require_observed(model: type[models.Model]) -> None:
    """Fail loudly when a consumer watches a model whose table sends no notifications."""
    if not is_observed(model):
        raise ImproperlyConfigured(
            f"{model._meta.label} is not observed by pgobserve: add "
            f'"{model._meta.label}" to PGOBSERVE["MODELS"] (or decorate it with '
            "@pgobserve.observe) and run `manage.py pgobserve install`."
        )
