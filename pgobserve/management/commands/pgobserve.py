"""``manage.py pgobserve install|uninstall|status|listen|makemigration`` (internal)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import pprint
import signal
import string
from pathlib import Path
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections
from django.db.migrations.loader import MigrationLoader

import pgobserve
from pgobserve import installation, registry, sql
from pgobserve.intake import observed_pk_kinds
from pgobserve.listener import Listener, conninfo_for_alias

__all__: list[str] = []  # internal: no public API

TEMPLATE = Path(pgobserve.__file__).parent / "migrations_templates" / "pgobserve_triggers.py-tpl"


class Command(BaseCommand):
    help = "Install, inspect and run pgobserve's database triggers and listener."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        for name, text in [
            ("install", "install or refresh the notify triggers of every observed table"),
            ("uninstall", "remove every pgobserve trigger and function"),
        ]:
            p = sub.add_parser(name, help=text)
            p.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
            p.add_argument(
                "--database", default=None, help="database alias (default: PGOBSERVE DATABASE)"
            )
        p = sub.add_parser("status", help="per observed table: installed / outdated / missing")
        p.add_argument("--database", default=None)
        p.add_argument(
            "--check", action="store_true", help="exit 1 unless every observed table is current"
        )
        p = sub.add_parser("listen", help="LISTEN and forward changes to the channel layer")
        p.add_argument("--database", default=None)
        p = sub.add_parser(
            "makemigration", help="write a migration that installs an app's triggers"
        )
        p.add_argument("app_label")
        p.add_argument("--name", default="pgobserve_triggers")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        # The consumers (and the model observers they define) decide which tables keep old
        # rows, and the listener sends their events: know them before anything else.
        registry.load_consumers()
        return getattr(self, "handle_" + subcommand)(**options)

    # install / uninstall / status -------------------------------------------------------

    def handle_install(self, database: str | None = None, dry_run: bool = False, **_: Any) -> None:
        self._print_changes(installation.install(database, dry_run=dry_run), dry_run, "installed")

    def handle_uninstall(
        self, database: str | None = None, dry_run: bool = False, **_: Any
    ) -> None:
        self._print_changes(installation.uninstall(database, dry_run=dry_run), dry_run, "removed")

    def _print_changes(
        self, changes: list[tuple[str, list[str]]], dry_run: bool, verb: str
    ) -> None:
        if not changes:
            self.stdout.write("Nothing to do: every observed table is already current.")
            return
        for table, statements in changes:
            if dry_run:
                self.stdout.write(f"-- {table}")
                self.stdout.write(";\n".join(statements) + ";\n")
            else:
                self.stdout.write(self.style.SUCCESS(f"{verb.capitalize()}: {table}"))

    def handle_status(self, database: str | None = None, check: bool = False, **_: Any) -> None:
        styles = {
            installation.INSTALLED: self.style.SUCCESS,
            installation.OUTDATED: self.style.WARNING,
            installation.MISSING: self.style.ERROR,
            installation.ORPHANED: self.style.WARNING,
        }
        entries = installation.status(database)
        if not entries:
            self.stdout.write('No observed models: list some in PGOBSERVE["MODELS"].')
        for entry in entries:
            label = entry.model or "(not observed: `pgobserve uninstall` removes it)"
            self.stdout.write(
                f"{styles[entry.state](entry.state.upper()):<20} {entry.table}  {label}"
            )
        usage = installation.queue_usage(database)
        self.stdout.write(f"Notification queue usage: {usage:.1%}")
        problems = []
        age = installation.oldest_old_row_age(database)
        if age is not None:
            self.stdout.write(f"Oldest row kept for model observers: written {age:.0f} s ago")
            if age > installation.OLD_ROWS_STALE_AFTER:
                self.stdout.write(
                    "No listener deletes them (a leading `manage.py pgobserve listen` does, "
                    "2 minutes after they were written): they pile up."
                )
                problems.append("Old rows pile up: no listener deletes them.")
        if any(e.state in (installation.OUTDATED, installation.MISSING) for e in entries):
            self.stdout.write("Run `manage.py pgobserve install` to bring them up to date.")
            problems.insert(0, "Some observed tables have no current triggers.")
        if check and problems:  # for deploy scripts and monitoring, like `makemigrations --check`
            raise CommandError(" ".join(problems))

    # listen -------------------------------------------------------------------------------

    def handle_listen(self, database: str | None = None, **_: Any) -> None:
        if not logging.getLogger("pgobserve").handlers and not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("pgobserve").setLevel(logging.INFO)
        conninfo = conninfo_for_alias(database)
        tables = observed_pk_kinds()  # notifications of other tables are ignored
        self._warn_untriggered(database)
        connections.close_all()  # the listener has its own connection

        async def main() -> None:
            listener = Listener(conninfo, tables=tables)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, listener.stop)
            await listener.run()

        asyncio.run(main())

    def _warn_untriggered(self, database: str | None) -> None:
        """An observed table without current triggers sends nothing: say so at startup (an
        upgrade that observes more tables needs ``pgobserve install``)."""
        try:
            states = installation.status(database)
        except DatabaseError as exc:  # the listener reconnects anyway; the check can wait
            logging.getLogger("pgobserve.listener").warning("could not check triggers: %s", exc)
            return
        stale = [
            s.table for s in states if s.state in (installation.MISSING, installation.OUTDATED)
        ]
        if stale:
            logging.getLogger("pgobserve.listener").warning(
                "pgobserve: %d observed table(s) have no current triggers and send nothing: %s;"
                " run `manage.py pgobserve install` (or migrate)",
                len(stale),
                ", ".join(sorted(stale)),
            )

    # makemigration ------------------------------------------------------------------------

    def handle_makemigration(
        self, app_label: str, name: str = "pgobserve_triggers", **_: Any
    ) -> None:
        try:
            app = apps.get_app_config(app_label)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        models = [m for m in registry.observed_models() if m._meta.app_label == app_label]
        if not models:
            raise CommandError(
                f'No observed model in app "{app_label}": add its models to PGOBSERVE["MODELS"].'
            )
        loader = MigrationLoader(None, ignore_no_migrations=True)
        leaves = loader.graph.leaf_nodes(app_label)
        migrations_dir = Path(app.path) / "migrations"
        if not leaves or not migrations_dir.is_dir():
            raise CommandError(
                f'App "{app_label}" has no migrations yet: run `manage.py makemigrations '
                f"{app_label}` first, so the trigger migration can depend on its tables."
            )
        number = (
            max(int(n[:4]) for _, n in loader.graph.nodes if _ == app_label and n[:4].isdigit()) + 1
        )
        specs = [installation.spec_for(m) for m in models]
        forward = [s for spec in specs for s in sql.render_install(spec)]
        backward = [s for spec in specs for s in sql.render_drop(spec)]
        text = string.Template(TEMPLATE.read_text()).substitute(
            app_label=app_label,
            version=pgobserve.__version__,
            template_version=sql.TEMPLATE_VERSION,
            date=datetime.date.today().isoformat(),
            tables=", ".join(spec.table for spec in specs),
            forward=pprint.pformat(forward, width=100),
            backward=pprint.pformat(backward, width=100),
            dependencies=pprint.pformat(sorted(leaves)),
        )
        path = migrations_dir / f"{number:04d}_{name}.py"
        path.write_text(text)
        self.stdout.write(self.style.SUCCESS(f"Wrote {path}"))
