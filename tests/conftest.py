"""Fixture plugins, psycopg style: one module per concern."""

pytest_plugins = ["tests.fix_db", "tests.fix_listen", "tests.fix_layer", "tests.fix_observers"]


def pytest_sessionstart(session):
    """One clear line, not an error per test, when the test server cannot be reached."""
    from tests.pgserver import require_reachable

    require_reachable()
