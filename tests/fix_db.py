"""The test database: pytest-django's test database with pgobserve's triggers installed.

Triggers are installed once per session by ``manage.py pgobserve install`` (the path a user
takes); the migration path is tested on its own in ``test_commands.py``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import call_command

from pgobserve.listener import conninfo_for_alias


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("pgobserve", "install", stdout=io.StringIO())


@pytest.fixture(scope="session")
def conninfo(django_db_setup, django_db_blocker) -> dict[str, Any]:
    """psycopg connection kwargs of the test database, for connections outside Django."""
    with django_db_blocker.unblock():
        return conninfo_for_alias("default")


@pytest.fixture(scope="session")
def test_dbname(conninfo) -> str:
    return conninfo["dbname"]


@pytest.fixture
def raw_conn(conninfo, transactional_db) -> Iterator[psycopg.Connection]:
    """An autocommit connection that is not Django's: a writer outside the application."""
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        yield conn


def pgobserve_objects(conn_or_cursor: Any) -> list[str]:
    """Every pgobserve trigger and function in the database, by name."""
    rows = conn_or_cursor.execute(
        """
        SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger
        WHERE tgname LIKE 'pgobserve\\_%%' AND NOT tgisinternal
        UNION ALL
        SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'pgobserve\\_%%'
        ORDER BY 1
        """
    ).fetchall()
    return [row[0] for row in rows]
