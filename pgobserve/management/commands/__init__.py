"""The ``manage.py pgobserve`` command (internal)."""

__all__: list[str] = []  # internal: no public API
