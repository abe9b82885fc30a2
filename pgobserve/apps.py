from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class PgObserveConfig(AppConfig):
    name = "pgobserve"
    verbose_name = "pgobserve"

    def ready(self) -> None:
        # A system check, not an exception here: every manage.py command (check, migrate,
        # runserver, pgobserve listen) then reports a typo in PGOBSERVE["MODELS"] as one
        # readable error instead of a traceback out of django.setup().
        checks.register(check_observed_models, "pgobserve")


def check_observed_models(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """PGOBSERVE["MODELS"] and ["OLD_ROWS"] name installed models that can carry triggers."""
    from . import registry

    try:
        registry.observed_models()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgobserve.E001")]
    return []
