from django.apps import AppConfig


class PgObserveConfig(AppConfig):
    name = "pgobserve"
    verbose_name = "pgobserve"

    def ready(self) -> None:
        from . import registry

        # Fail at startup, not at the first change, when PGOBSERVE["MODELS"] names a typo.
        registry.observed_models()
