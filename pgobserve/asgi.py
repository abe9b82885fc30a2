"""``PgObserveRouter``: an ASGI wrapper that runs the in-process listener with the app.

Optional: ``AsyncAPIConsumer`` already starts the in-process listener on the first
connection. Wrapping adds two things: servers that send ASGI lifespan events (uvicorn,
hypercorn) start the listener at startup and stop it cleanly at shutdown, and an app
whose router does not speak lifespan (Channels' ``ProtocolTypeRouter``) is shielded
from those events::

    application = PgObserveRouter(ProtocolTypeRouter({...}))
"""

from __future__ import annotations

from typing import Any

from . import conf, inprocess

__all__ = ["PgObserveRouter"]


class PgObserveRouter:
    """Wrap an ASGI application: start the in-process listener at startup, stop it at shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        inprocess.ensure_started()
        return await self.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if conf.in_process_listener():
                    inprocess.ensure_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await inprocess.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
