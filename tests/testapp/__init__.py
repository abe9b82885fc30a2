"""Observed models of the database-side tests: every pk type, and names built to break SQL."""
