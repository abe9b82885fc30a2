"""The ``manage.py pgobserve`` command's package (internal)."""

__all__: list[str] = []  # internal: no public API
