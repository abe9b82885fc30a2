import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import (  # noqa: E402
    ActivityConsumer,
    CardConsumer,
    DCRFActivityConsumer,
    DCRFItemConsumer,
    ItemConsumer,
    PrivateItemConsumer,
)

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("ws/pgobserve/", ItemConsumer.as_asgi()),
                path("ws/pgobserve-private/", PrivateItemConsumer.as_asgi()),
                path("ws/dcrf/", DCRFItemConsumer.as_asgi()),
                path("ws/cards/", CardConsumer.as_asgi()),
                path("ws/activity/", ActivityConsumer.as_asgi()),
                path("ws/dcrf-activity/", DCRFActivityConsumer.as_asgi()),
            ]
        )
    }
)
