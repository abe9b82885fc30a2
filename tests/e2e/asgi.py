"""The ASGI app daphne serves in the end-to-end tests: the example's routes plus test ones."""

import django
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

django.setup()

from django.urls import path  # noqa: E402
from project.routing import websocket_urlpatterns  # noqa: E402

from pgobserve.asgi import PgObserveRouter  # noqa: E402
from tests.e2e.consumers import (  # noqa: E402
    GuardedQueryTaskConsumer,
    GuardedTaskConsumer,
    PortedUserConsumer,
    QueryTaskConsumer,
    SharedTaskConsumer,
)
from tests.e2e.m2m_consumers import GroupMembersConsumer, PortedM2MUserConsumer  # noqa: E402

routes = [
    *websocket_urlpatterns,
    path("ws/guarded-tasks/", GuardedTaskConsumer.as_asgi()),
    path("ws/guarded-query-tasks/", GuardedQueryTaskConsumer.as_asgi()),
    path("ws/shared-tasks/", SharedTaskConsumer.as_asgi()),
    path("ws/dcrf-users/", PortedUserConsumer.as_asgi()),
    path("ws/query-tasks/", QueryTaskConsumer.as_asgi()),
    path("ws/dcrf-m2m-users/", PortedM2MUserConsumer.as_asgi()),
    path("ws/group-members/", GroupMembersConsumer.as_asgi()),
]

application = PgObserveRouter(
    ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter(routes))})
)
