"""The ASGI app daphne serves in the end-to-end tests: the example's routes plus test ones.

The example's ``/ws/tasks/``, ``/ws/open-tasks/`` and ``/ws/projects/`` need a login and
show only the user's rows; the tests speak the protocol there without sessions, so those
paths serve the open test consumers (``tests/e2e/consumers.py``) instead.
"""

import django
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

django.setup()

from django.urls import path  # noqa: E402
from project.routing import websocket_urlpatterns  # noqa: E402

from pgobserve.asgi import PgObserveRouter  # noqa: E402
from tests.e2e.consumers import (  # noqa: E402
    AnyoneOpenTaskConsumer,
    AnyoneProjectConsumer,
    AnyoneTaskConsumer,
    GuardedQueryTaskConsumer,
    GuardedTaskConsumer,
    OtherProjectTasksConsumer,
    PortedUserConsumer,
    ProjectTasksConsumer,
    QueryTaskConsumer,
    SharedTaskConsumer,
)
from tests.e2e.m2m_consumers import GroupMembersConsumer, PortedM2MUserConsumer  # noqa: E402

OPEN_IN_TESTS = {
    "ws/tasks/": AnyoneTaskConsumer,
    "ws/open-tasks/": AnyoneOpenTaskConsumer,
    "ws/projects/": AnyoneProjectConsumer,
}

routes = [
    *(path(route, consumer.as_asgi()) for route, consumer in OPEN_IN_TESTS.items()),
    *(p for p in websocket_urlpatterns if str(p.pattern) not in OPEN_IN_TESTS),
    path("ws/guarded-tasks/", GuardedTaskConsumer.as_asgi()),
    path("ws/guarded-query-tasks/", GuardedQueryTaskConsumer.as_asgi()),
    path("ws/shared-tasks/", SharedTaskConsumer.as_asgi()),
    path("ws/dcrf-users/", PortedUserConsumer.as_asgi()),
    path("ws/query-tasks/", QueryTaskConsumer.as_asgi()),
    path("ws/dcrf-m2m-users/", PortedM2MUserConsumer.as_asgi()),
    path("ws/group-members/", GroupMembersConsumer.as_asgi()),
    path("ws/project-tasks/", ProjectTasksConsumer.as_asgi()),
    path("ws/other-project-tasks/", OtherProjectTasksConsumer.as_asgi()),
]

application = PgObserveRouter(
    ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter(routes))})
)
