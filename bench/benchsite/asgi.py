import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import DCRFItemConsumer, ItemConsumer, PrivateItemConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("ws/pgobserve/", ItemConsumer.as_asgi()),
                path("ws/pgobserve-private/", PrivateItemConsumer.as_asgi()),
                path("ws/dcrf/", DCRFItemConsumer.as_asgi()),
            ]
        )
    }
)
