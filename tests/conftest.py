"""Fixture plugins, psycopg style: one module per concern."""

pytest_plugins = ["tests.fix_db", "tests.fix_listen", "tests.fix_layer"]
