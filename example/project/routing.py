import logging

from accounts.consumers import UserConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path
from tasks.consumers import MyTaskConsumer, OpenTaskConsumer, ProjectConsumer, TaskConsumer

logger = logging.getLogger("project")


class UnknownPath(AsyncWebsocketConsumer):
    """Any other path: the handshake is refused (403) with one log line naming the routes,
    instead of Channels' 'No route found' traceback in the server's terminal."""

    async def connect(self) -> None:
        logger.warning(
            "no WebSocket route for %r; the routes are %s",
            self.scope.get("path"),
            ", ".join(f"/{p.pattern}" for p in websocket_urlpatterns),
        )
        await self.close()


websocket_urlpatterns = [
    path("ws/users/", UserConsumer.as_asgi()),
    path("ws/tasks/", TaskConsumer.as_asgi()),
    path("ws/open-tasks/", OpenTaskConsumer.as_asgi()),
    path("ws/my-tasks/", MyTaskConsumer.as_asgi()),
    path("ws/projects/", ProjectConsumer.as_asgi()),
]
#: Served after the routes (``asgi.py``): any other path.
unknown_path = re_path(r"", UnknownPath.as_asgi())
