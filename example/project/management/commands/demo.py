"""``python example/manage.py demo``: the whole thing, one command, one process.

Starts the embedded PostgreSQL (or uses ``DATABASE_URL``), migrates, installs the
triggers, seeds a few rows and serves the example with daphne on 127.0.0.1:8000 with the
in-process listener. Ctrl-C stops daphne, the listener and the embedded server.
"""

from __future__ import annotations

import io
import os
import signal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections
from tasks.models import Project, Task

from project import database

TITLES = ["Write the README", "Ship the demo", "Fix the flaky test"]


class Command(BaseCommand):
    help = "Run the live demo: database, migrations, triggers, seed rows, daphne on :8000."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, host: str, port: int, **options) -> None:
        try:
            self.stdout.write("migrating...")
            call_command("migrate", interactive=False, verbosity=0)
            call_command("pgobserve", "install", stdout=io.StringIO())
            task = self.seed()
            self.banner(host, port, task)
            connections.close_all()
            self.serve(host, port)
        finally:
            database.stop_embedded()

    def seed(self) -> Task:
        user_model = get_user_model()
        user = user_model.objects.filter(username="demo").first()
        if user is None:
            user = user_model.objects.create_user("demo", "demo@example.com", "demo")
        project, _ = Project.objects.get_or_create(
            slug="demo", defaults={"name": "Demo", "owner": user}
        )
        if not project.tasks.exists():
            for title in TITLES:
                Task.objects.create(project=project, title=title)
        return project.tasks.order_by("id").first()

    def banner(self, host: str, port: int, task: Task) -> None:
        where = os.environ.get("DATABASE_URL") and "DATABASE_URL" or f"embedded, {database.PGDATA}"
        base = f"{host}:{port}"
        update = (
            f"UPDATE tasks_task SET title = 'Changed in psql', done = NOT done WHERE id = {task.pk}"
        )
        delete = f"DELETE FROM tasks_task WHERE id = {task.pk}"
        lines = [
            "",
            f"pgobserve demo: PostgreSQL ({where}), listener in-process: "
            f"{settings.PGOBSERVE.get('IN_PROCESS_LISTENER')}",
            "",
            f"  live page      http://{base}/   (log in as demo / demo at http://{base}/login/)",
            f"  WebSockets     ws://{base}/ws/tasks/  ws://{base}/ws/open-tasks/",
            f"                 ws://{base}/ws/projects/ (lookup by slug)  "
            f"ws://{base}/ws/users/ (logged-in session)",
            f"                 ws://{base}/ws/my-tasks/ (the logged-in user's tasks)",
            "",
            "  subscribe from a terminal:",
            f"    python example/watch.py ws://{base}/ws/tasks/ {task.pk}",
            "  then change the row from another terminal:",
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
        CommandLineInterface().run(["-b", host, "-p", str(port), "project.asgi:application"])
