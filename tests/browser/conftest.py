"""Browser end-to-end fixtures: the example's board in real headless Chromium.

The example project (``example/project``: its ASGI app, routes, templates, static files and
its own settings, ``tests/browser/settings.py``) runs as real processes on the test
database, with the e2e machinery (``tests/e2e/conftest.py``'s ``Process``):

* ``inprocess``: daphne alone, with the in-process listener and the in-memory layer (what
  ``manage.py demo`` runs);
* ``redis``: daphne and ``manage.py pgobserve listen`` as separate processes on the Redis
  layer (production); tests that kill the listener run in this mode only (``REDIS_ONLY``),
  tests of the page's own features in one mode (``ONE_MODE``: this one when Redis is there).

Chromium is Debian's (``/usr/bin/chromium``, or ``PGOBSERVE_CHROMIUM``), driven by Playwright,
which never downloads a browser here. The browser and servers live for this folder's tests
only ("package" scope): a sync Playwright marks an event loop as running in the main thread,
which the async tests elsewhere would trip over. Every DOM wait is Playwright's auto-waiting
``expect`` with an explicit bound. A screenshot of every page a test opened is saved in
``tests/browser/artifacts/`` (or ``PGOBSERVE_BROWSER_ARTIFACTS``), pass or fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest

from tests.e2e.conftest import ROOT, TIMEOUT, Process, free_port
from tests.fix_layer import find_redis

CHROMIUM = os.environ.get("PGOBSERVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The machine's network is closed: without the background-networking flags Chromium stalls
# on its own update and sync requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("PGOBSERVE_BROWSER_ARTIFACTS") or Path(__file__).parent / "artifacts"
)
#: Bound of one DOM expectation (a page load, a push on a loaded CI machine): a bound, not a
#: target.
WAIT_MS = 20_000
#: Bound of a reconnect after a restart: the client's backoff waits up to 10 s between
#: attempts, and daphne's start takes seconds on a loaded machine.
RECONNECT_MS = 40_000
PASSWORD = "browser-pw"
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
PLAYWRIGHT_MISSING = "no Playwright for Python: pip install -e '.[dev]'"
SAVED: list[Path] = []  # screenshots of this run


def chromium_missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does),"
            " or set PGOBSERVE_CHROMIUM"
        )
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    sync_api = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING)
    # While the sync Playwright lives, its event loop counts as running in this thread
    # (suspended in a greenlet between calls), so Django's ORM would refuse the tests' plain
    # sync queries; nothing runs concurrently with them: allow it, for this folder only.
    unsafe = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "1"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000
            )
            yield browser
            browser.close()
    finally:
        if unsafe is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = unsafe


# the example's servers ---------------------------------------------------------------------


class Example:
    """The example served by daphne on one port for the whole run (a restart keeps it), and
    in the "redis" mode its listener process."""

    def __init__(self, mode: str, env: dict[str, str]) -> None:
        self.mode, self.env = mode, env
        self.port = free_port()
        self.daphne: Process | None = None
        self.listener: Process | None = None
        self.started: list[Process] = []

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _start(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.env)
        self.started.append(process)
        return process

    def start_listener(self) -> None:
        self.listener = self._start("listener", ["-m", "django", "pgobserve", "listen"])
        self.listener.wait_for("LISTENs on channel")

    def start_daphne(self) -> None:
        self.daphne = self._start(
            "daphne",
            ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "project.asgi:application"],
        )
        self.daphne.wait_for("Listening on TCP address")
        if self.mode == "inprocess":
            # Any request starts the in-process listener (PgObserveRouter); wait until it
            # LISTENs, so the first test's changes are not made before anyone listens.
            urllib.request.urlopen(self.url("/login/"), timeout=TIMEOUT).close()
            self.daphne.wait_for("LISTENs on channel")

    def ensure_running(self) -> None:
        if self.mode == "redis" and self.listener.proc.poll() is not None:
            self.start_listener()
        if self.daphne.proc.poll() is not None:
            self.start_daphne()

    @staticmethod
    def kill(process: Process) -> None:
        """SIGKILL: no shutdown, sockets cut as by a crash."""
        process.proc.kill()
        process.proc.wait(10)

    def close(self) -> None:
        for process in reversed(self.started):
            process.stop()


def database_url(dbname: str) -> str:
    """The test database as a postgresql:// URL: the example reads ``DATABASE_URL``."""
    from tests.pgserver import dsn

    return urlparse(dsn())._replace(path=f"/{dbname}").geturl()


#: The mode of the tests that run once, not in both: the production layout when a Redis is
#: there (CI), else the demo's. ``@ONE_MODE`` on a test.
ONE_MODE = pytest.mark.parametrize(
    "example", ["redis" if find_redis() else "inprocess"], indirect=True
)
REDIS_ONLY = pytest.mark.parametrize("example", ["redis"], indirect=True)


@pytest.fixture(scope="package", params=["inprocess", "redis"])
def example(request, browser, django_db_setup, test_dbname) -> Iterator[Example]:
    mode = request.param
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.browser.settings",
        "DATABASE_URL": database_url(test_dbname),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "example"), str(ROOT)]),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)  # the example's settings pick Redis by REDIS_URL alone
    env.pop(ASYNC_UNSAFE, None)  # set for this process only (``browser``), never the servers'
    if mode == "redis":
        redis_url = find_redis()
        if not redis_url:
            pytest.skip("no Redis: set REDIS_URL (CI does) or run redis-server on 127.0.0.1:6379")
        env.update(
            REDIS_URL=redis_url,
            PGOBSERVE_TEST_REDIS_PREFIX=f"pgobserve-browser-{uuid.uuid4().hex[:8]}",
        )
    served = Example(mode, env)
    try:
        if mode == "redis":
            served.start_listener()
        served.start_daphne()
        yield served
    finally:
        served.close()


# users and their rows ----------------------------------------------------------------------


@dataclass
class Account:
    user: Any
    projects: list[Any]

    @property
    def username(self) -> str:
        return self.user.username


@pytest.fixture
def make_account(transactional_db):
    """A user with projects of their own (no tasks); the password is ``PASSWORD``."""
    from django.contrib.auth.hashers import MD5PasswordHasher
    from django.contrib.auth.models import User
    from tasks.models import Project

    def make(username: str, projects: tuple[str, ...] = ("Home",)) -> Account:
        # The example's settings in the tests check MD5 first: a login costs no PBKDF2.
        hashed = MD5PasswordHasher().encode(PASSWORD, MD5PasswordHasher().salt())
        user = User.objects.create(username=username, password=hashed)
        made = [
            Project.objects.create(name=name, slug=f"{username}-{slugify(name)}", owner=user)
            for name in projects
        ]
        return Account(user, made)

    return make


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@pytest.fixture
def psql(conninfo, transactional_db) -> Iterator[psycopg.Connection]:
    """An autocommit psycopg connection: a writer the application never sees, as psql is."""
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        yield conn


# pages -------------------------------------------------------------------------------------

#: Runs in every page before its own scripts: records each watched word that ever shows in
#: the document, and each state of the connection indicator.
WATCH_SCRIPT = """
(words) => {
  window.__seen = [];
  window.__states = [];
  let indicator = null;
  const record = () => {
    const state = indicator.dataset.state;
    if (window.__states.at(-1) !== state) window.__states.push(state);
  };
  new MutationObserver((mutations, observer) => {
    if (!indicator && (indicator = document.getElementById("connection"))) {
      record();
      new MutationObserver(record).observe(indicator, {attributeFilter: ["data-state"]});
      if (!words.length) observer.disconnect();
    }
    const text = words.length ? document.documentElement.textContent : "";
    for (const word of words) {
      if (text.includes(word) && !window.__seen.includes(word)) window.__seen.push(word);
    }
  }).observe(document, {subtree: true, childList: true, characterData: true});
}
"""


class BoardOpener:
    """``open_board(account)``: a fresh browser context (its own cookies) that logs in
    through the login form and waits until the board is live; returns the page.
    ``never_shows``: words the page must never show nor receive on its sockets (see
    ``leaks``)."""

    def __init__(self, browser: Any, example: Example) -> None:
        self.browser, self.example = browser, example
        self.opened: list[tuple[str, Any]] = []
        self.received: dict[int, list[str]] = {}  # id(page) → watched words in socket frames

    def __call__(self, account: Account, never_shows: tuple[str, ...] = ()) -> Any:
        from playwright.sync_api import expect

        context = self.browser.new_context(
            base_url=self.example.url(""), viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(f"({WATCH_SCRIPT})({json.dumps(list(never_shows))})")
        page = context.new_page()
        self.opened.append((account.username, page))
        received = self.received.setdefault(id(page), [])

        def watch_frames(socket: Any) -> None:
            def check(payload: str | bytes) -> None:
                text = payload if isinstance(payload, str) else payload.decode(errors="replace")
                received.extend(word for word in never_shows if word in text)

            socket.on("framereceived", check)

        page.on("websocket", watch_frames)
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login/"), timeout=WAIT_MS)
        page.locator("#id_username").fill(account.username)
        page.locator("#id_password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#user-name")).to_have_text(account.username, timeout=WAIT_MS)
        expect(page.locator("#board")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        return page

    def leaks(self, page: Any) -> dict[str, list[str]]:
        """The ``never_shows`` words the page showed, and those its sockets received."""
        return {
            "shown": page.evaluate("window.__seen"),
            "received": sorted(set(self.received[id(page)])),
        }

    def close(self, test_name: str, failed: bool) -> None:
        """A full-page screenshot of every page opened (and, after a failure, the states its
        connection indicator went through), then its context closed."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")
        for username, page in self.opened:
            path = ARTIFACTS / f"{name}-{username}.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=10_000)
                SAVED.append(path)
                print(f"screenshot: {path}")
                if failed:
                    print(f"{username}'s connection states:", page.evaluate("window.__states"))
            except Exception as exc:  # a crashed page: still save the others
                print(f"screenshot of {username}'s page failed: {exc}")
            page.context.close()


CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture
def open_board(browser, example, transactional_db, request) -> Iterator[BoardOpener]:
    """Screenshots of every page opened are saved when the test ends, whatever its outcome
    (before ``transactional_db`` empties the tables); after a failure, the servers' output
    too."""
    example.ensure_running()  # after a restart test that failed halfway
    opener = BoardOpener(browser, example)
    yield opener
    report = request.node.stash.get(CALL_REPORT, None)
    failed = report is not None and report.failed
    opener.close(request.node.name, failed)
    if failed:
        for process in example.started[-4:]:
            print(f"--- {process.name} (pid {process.proc.pid}), last lines:")
            print("".join(process.lines[-40:]))


def pytest_terminal_summary(terminalreporter) -> None:
    if SAVED:
        terminalreporter.write_line(f"browser screenshots ({len(SAVED)}): {ARTIFACTS}")


# what the board must show --------------------------------------------------------------------


def insert_task(conn: psycopg.Connection, project: Any, title: str, done: bool = False) -> int:
    return conn.execute(
        "INSERT INTO tasks_task (project_id, title, done, notes, updated_at)"
        " VALUES (%s, %s, %s, '', now()) RETURNING id",
        [project.pk, title, done],
    ).fetchone()[0]


def rows_of(conn: psycopg.Connection, account: Account) -> list[tuple[int, str, bool]]:
    """The account's tasks as the database holds them, newest first (the board's order)."""
    return conn.execute(
        "SELECT t.id, t.title, t.done FROM tasks_task t"
        " JOIN tasks_project p ON p.id = t.project_id WHERE p.owner_id = %s ORDER BY t.id DESC",
        [account.user.pk],
    ).fetchall()


def card(page: Any, pk: int, column: str | None = None) -> Any:
    """A card on the board (a leaving card has another data-testid), in ``column`` if named."""
    found = f'[data-testid="task-card"][data-task-id="{pk}"]'
    if column:
        found = f'[data-testid="column"][data-column="{column}"] {found}'
    return page.locator(found)


def expect_board(page: Any, rows: list[tuple[int, str, bool]]) -> None:
    """The status board shows exactly ``rows`` (id, title, done): each card in its column,
    in the board's order, with its title, and nothing else."""
    from playwright.sync_api import expect

    for column, done in (("open", False), ("done", True)):
        wanted = [(pk, title) for pk, title, is_done in rows if is_done is done]
        cards = page.locator(
            f'[data-testid="column"][data-column="{column}"] [data-testid="task-card"]'
        )
        titles = cards.locator('[data-testid="task-title"]')
        if wanted:
            expect(titles).to_have_text([title for _, title in wanted], timeout=WAIT_MS)
        else:
            expect(cards).to_have_count(0, timeout=WAIT_MS)
        count = page.locator(f'#column-{column} [data-testid="column-count"]')
        expect(count).to_have_text(str(len(wanted)), timeout=WAIT_MS)
        for pk, _ in wanted:
            expect(card(page, pk, column)).to_have_count(1, timeout=WAIT_MS)
