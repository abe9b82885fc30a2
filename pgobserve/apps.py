"""The Django app of pgobserve (internal): registers its system checks (``checks.py``)."""

from django.apps import AppConfig

__all__: list[str] = []  # internal: no public API (Django finds PgObserveConfig itself)


class PgObserveConfig(AppConfig):
    name = "pgobserve"
    verbose_name = "pgobserve"

    def ready(self) -> None:
        # System checks, not exceptions here: every manage.py command (check, migrate,
        # runserver, pgobserve listen) then reports a misconfiguration as one readable
        # message instead of a traceback out of django.setup().
        from . import checks

        checks.register()
