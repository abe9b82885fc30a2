"""The board converges to the database without a page reload when daphne restarts, or the
listener process is killed and restarted, while rows change.

``window.__marker`` is set before the fault and read after it: a reload would lose it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

from .conftest import (
    PLAYWRIGHT_MISSING,
    RECONNECT_MS,
    REDIS_ONLY,
    WAIT_MS,
    card,
    expect_board,
    insert_task,
    rows_of,
)

expect = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING).expect
pytestmark = pytest.mark.django_db(transaction=True)


class Writer:
    """Changes a project's tasks from its own psycopg connection until stopped: titles,
    done flips, and now and then an insert or a delete. Paced, not synchronised: tests wait
    for a number of commits (``wait_commits``), within a bound."""

    def __init__(self, conninfo: dict[str, Any], project: Any, pks: list[int]) -> None:
        self.conn = psycopg.connect(**conninfo, autocommit=True)
        self.project, self.pks = project, list(pks)
        self.commits = 0
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as exc:
            self.error = exc
        with self.changed:
            self.changed.notify_all()

    def _write(self) -> None:
        rng = random.Random(11)
        while not self._stop.wait(0.03):
            n, choice = self.commits, rng.random()
            if choice < 0.1 and len(self.pks) > 3:
                self.conn.execute("DELETE FROM tasks_task WHERE id = %s", [self.pks.pop()])
            elif choice < 0.2:
                self.pks.append(insert_task(self.conn, self.project, f"Added {n}"))
            elif choice < 0.5:
                self.conn.execute(
                    "UPDATE tasks_task SET done = NOT done, updated_at = now() WHERE id = %s",
                    [rng.choice(self.pks)],
                )
            else:
                self.conn.execute(
                    "UPDATE tasks_task SET title = %s, updated_at = now() WHERE id = %s",
                    [f"Renamed {n}", rng.choice(self.pks)],
                )
            with self.changed:
                self.commits += 1
                self.changed.notify_all()

    def wait_commits(self, more: int, timeout: float = 10) -> None:
        """Until ``more`` further commits are made."""
        deadline = time.monotonic() + timeout
        with self.changed:
            wanted = self.commits + more
            while self.commits < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error or not self._thread.is_alive():
                    raise AssertionError(
                        f"the writer made {self.commits}/{wanted} commits: {self.error!r}"
                    )
                self.changed.wait(remaining)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()
        assert self.error is None, f"the writer failed: {self.error!r}"


def busy_board(open_board, make_account, psql) -> tuple[Any, Any, list[int]]:
    """Ada's live board with six tasks, marked (``window.__marker``)."""
    ada = make_account("ada")
    (home,) = ada.projects
    pks = [insert_task(psql, home, f"Task {n}") for n in range(6)]
    page = open_board(ada)
    expect_board(page, rows_of(psql, ada))
    page.evaluate("window.__marker = 1")
    return ada, page, pks


def test_daphne_restart_while_rows_change(example, open_board, make_account, psql, conninfo):
    ada, page, pks = busy_board(open_board, make_account, psql)
    connection = page.locator("#connection")
    # The detail pane's live row converges too (the writer never deletes the first task).
    card(page, pks[0]).locator('[data-testid="task-title"]').click()
    expect(page.locator("#detail")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    writer = Writer(conninfo, ada.projects[0], pks)
    try:
        writer.wait_commits(3)
        example.kill(example.daphne)
        expect(connection).not_to_have_attribute("data-state", "open", timeout=WAIT_MS)
        writer.wait_commits(5)  # while daphne is down
        example.start_daphne()  # on the same port
        writer.wait_commits(5)  # while the page reconnects, or just after
        expect(connection).to_have_attribute("data-state", "open", timeout=RECONNECT_MS)
        writer.wait_commits(3)
    finally:
        writer.stop()

    expect_board(page, rows_of(psql, ada))
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert page.evaluate("window.__states")[-2:] == ["reconnecting", "open"]
    title, done = psql.execute(
        "SELECT title, done FROM tasks_task WHERE id = %s", [pks[0]]
    ).fetchone()
    expect(page.locator("#detail-title")).to_have_value(title, timeout=WAIT_MS)
    expect(page.locator("#detail-done")).to_be_checked(checked=done, timeout=WAIT_MS)
    expect(page.locator("#session-ended")).to_be_hidden(timeout=WAIT_MS)


@REDIS_ONLY  # the listener's own process
def test_listener_killed_and_restarted_while_rows_change(
    example, open_board, make_account, psql, conninfo
):
    ada, page, pks = busy_board(open_board, make_account, psql)
    writer = Writer(conninfo, ada.projects[0], pks)
    try:
        writer.wait_commits(3)
        example.kill(example.listener)
        writer.wait_commits(5)  # nobody listens: these notifications are lost
        example.start_listener()  # which makes every consumer re-read
        writer.wait_commits(5)
    finally:
        writer.stop()

    expect_board(page, rows_of(psql, ada))
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    # The sockets stayed open: the board caught up through the new listener's resync.
    assert "reconnecting" not in page.evaluate("window.__states")
