"""Which models are observed: ``PGOBSERVE["MODELS"]`` plus models marked with ``@observe``."""

from __future__ import annotations

import difflib
from typing import TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from . import conf

M = TypeVar("M", bound=type[models.Model])

_decorated: list[type[models.Model]] = []


def observe(model: M) -> M:
    """Class decorator: observe this model as if it were listed in ``PGOBSERVE["MODELS"]``."""
    if not isinstance(model, type) or not issubclass(model, models.Model):
        raise TypeError("@pgobserve.observe decorates Django model classes")
    if model not in _decorated:
        _decorated.append(model)
    return model


def _resolve(label: str) -> type[models.Model]:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        known = [m._meta.label for m in apps.get_models()]
        hint = difflib.get_close_matches(label, known, n=1)
        did_you_mean = f'; did you mean "{hint[0]}"?' if hint else "."
        raise ImproperlyConfigured(
            f'PGOBSERVE["MODELS"] names "{label}", which is not an installed model'
            f'{did_you_mean} Use "app_label.ModelName".'
        ) from None


def observed_models() -> list[type[models.Model]]:
    """Every observed concrete model, in settings order then decorator order, no duplicates."""
    found: list[type[models.Model]] = []
    for model in [_resolve(label) for label in conf.models()] + _decorated:
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


def model_for_table(table: str) -> type[models.Model] | None:
    return observed_tables().get(table)


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
