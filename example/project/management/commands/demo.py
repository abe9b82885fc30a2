"""``python example/manage.py demo [--host H] [--port P]``: the whole thing, one command.

Starts the embedded PostgreSQL (or uses ``DATABASE_URL``), migrates, installs the
triggers, seeds two users with projects and tasks, and serves the board with daphne (on
127.0.0.1:8000 by default) with the in-process listener. Ctrl-C stops daphne, the listener
and the embedded server, quietly.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import socket
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections
from tasks.models import Project, Task

from project import database

#: username → (password, staff, [(slug, project name, task titles)]). The demo user may
#: use the admin; ada has a board of her own (log in from another browser to compare).
USERS = {
    "demo": (
        "demo",
        True,
        [
            ("demo", "Demo", ["Write the README", "Ship the demo", "Fix the flaky test"]),
            ("website", "Website", ["Draw the landing page", "Pick a font"]),
        ],
    ),
    "ada": ("ada", False, [("research", "Research", ["Read the paper", "Run the numbers"])]),
}


class Command(BaseCommand):
    help = "Run the live demo: database, migrations, triggers, seed rows, the board on daphne."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
        parser.add_argument("--port", type=int, default=8000, help="port to serve on")

    def handle(self, host: str, port: int, **options) -> None:
        try:
            self.check_port(host, port)
            self.stdout.write("migrating...")
            call_command("migrate", interactive=False, verbosity=0)
            call_command("pgobserve", "install", stdout=io.StringIO())
            task = self.seed()
            self.banner(host, port, task)
            connections.close_all()
            self.serve(host, port)
        except KeyboardInterrupt:
            pass
        finally:
            # Nothing more from daphne, the listener or the embedded server: the user is done.
            logging.disable(logging.INFO)
            database.stop_embedded()
        self.stdout.write("demo stopped.")

    def check_port(self, host: str, port: int) -> None:
        """Exit with one clear line, before anything else is printed, when the port is
        taken (another demo still running?) or the address is not this machine's."""
        problem = bind_problem(host, port)
        if problem is None:
            return
        message = f"Cannot serve on {host}:{port}: {problem}."
        free = next((p for p in range(port + 1, port + 50) if bind_problem(host, p) is None), 0)
        if free:
            message += f" Try: python example/manage.py demo --port {free}"
        self.stderr.write(message)
        sys.exit(1)

    def seed(self) -> Task:
        """The demo rows, added once; the demo user is made staff and superuser each
        time (so a database seeded by an older demo gets an admin login too)."""
        user_model = get_user_model()
        for username, (password, staff, projects) in USERS.items():
            user = user_model.objects.filter(username=username).first()
            if user is None:
                user = user_model.objects.create_user(username, f"{username}@example.com", password)
            if staff and not (user.is_staff and user.is_superuser):
                user_model.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
            for slug, name, titles in projects:
                project, _ = Project.objects.get_or_create(
                    slug=slug, defaults={"name": name, "owner": user}
                )
                if project.owner_id is None:
                    Project.objects.filter(pk=project.pk).update(owner=user)
                if not project.tasks.exists():
                    Task.objects.bulk_create(Task(project=project, title=t) for t in titles)
        first = Task.objects.filter(project__owner__username="demo").order_by("id").first()
        return first or Task.objects.order_by("id").first()

    def banner(self, host: str, port: int, task: Task | None) -> None:
        where = os.environ.get("DATABASE_URL") and "DATABASE_URL" or f"embedded, {database.PGDATA}"
        in_process = settings.PGOBSERVE.get("IN_PROCESS_LISTENER")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host  # all interfaces
        base = f"{shown}:{port}"
        pk = task.pk if task else 1
        update = (
            "UPDATE tasks_task SET title = 'Changed in psql', done = NOT done,"
            f" updated_at = now() WHERE id = {pk}"
        )
        delete = f"DELETE FROM tasks_task WHERE id = {pk}"
        lines = [
            "",
            f"pgobserve demo: PostgreSQL ({where}), "
            + ("listener in this process" if in_process else "run `pgobserve listen` too"),
            "",
            f"  the board      http://{base}/        log in as demo / demo (or ada / ada)",
            f"  the admin      http://{base}/admin/  demo / demo",
            f"  WebSockets     ws://{base}/ws/tasks/  ws://{base}/ws/projects/  "
            f"ws://{base}/ws/users/",
            f"                 ws://{base}/ws/open-tasks/  ws://{base}/ws/my-tasks/",
            "                 (each needs a logged-in session: the board's, or watch.py's)",
            "",
            "  watch one task from a terminal (logs in as demo / demo):",
            f"    python example/watch.py ws://{base}/ws/tasks/ {pk}",
            "  then change it from another terminal, the board or the admin:",
            f"    {database.psql_command(update)}",
            f"    {database.psql_command(delete)}",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def serve(self, host: str, port: int) -> None:
        from daphne.cli import CommandLineInterface

        # A shell that starts us in the background may have ignored SIGINT; Twisted then
        # leaves it ignored. Ctrl-C must stop the demo, so restore Python's handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # -v 0: warnings and errors only; the banner above says where everything is.
        args = ["-v", "0", "-b", host, "-p", str(port), "project.asgi:application"]
        CommandLineInterface().run(args)


def bind_problem(host: str, port: int) -> str | None:
    """Why daphne could not listen on host:port (as Twisted binds: SO_REUSEADDR), or None."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
    except (OSError, UnicodeError) as exc:
        return f"unknown host ({exc})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except PermissionError:
            return "permission denied (ports below 1024 need root)"
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is already in use (another demo still running?)"
            return exc.strerror or str(exc)
    return None
