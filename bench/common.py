"""Shared helpers of the benchmark scripts: which PostgreSQL, timing, the table printer."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def dsn() -> str:
    """``PGOBSERVE_BENCH_DSN`` if set, else the tests' choice (embedded PostgreSQL by default)."""
    if os.environ.get("PGOBSERVE_BENCH_DSN"):
        return os.environ["PGOBSERVE_BENCH_DSN"]
    from tests.pgserver import dsn as test_dsn

    return test_dsn()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    """Print a Markdown table (pasted as is into bench/README.md)."""
    table = [tuple(str(x) for x in headers)] + [tuple(str(x) for x in row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]

    def line(cells: tuple) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n## {title}\n")
    print(line(table[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table[1:]:
        print(line(row))


def configure_django(**overrides) -> None:
    """Minimal settings for benches that use pgobserve's pieces without a project."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(PGOBSERVE={}, USE_TZ=True, **overrides)
