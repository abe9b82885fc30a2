"""ASGI entry point: Django for HTTP, the pgobserve consumers under /ws/.

Static files (the board's CSS and JS, pgobserve's client.js, the admin's) are served by
Django's staticfiles handler, so ``daphne`` alone serves the whole demo; in production put
them behind a web server or WhiteNoise after ``collectstatic``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from pgobserve.asgi import PgObserveRouter  # noqa: E402

from .routing import unknown_path, websocket_urlpatterns  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Browsers must come from our own host (the session cookie rides along, so a foreign
    page must not open the socket); clients that send no Origin (scripts) are let through:
    they cannot carry a victim's cookie."""

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or super().valid_origin(parsed_origin)


application = PgObserveRouter(
    ProtocolTypeRouter(
        {
            "http": ASGIStaticFilesHandler(django_asgi_app),
            "websocket": BrowserOriginValidator(
                AuthMiddlewareStack(URLRouter([*websocket_urlpatterns, unknown_path])),
                list(settings.ALLOWED_HOSTS),
            ),
        }
    )
)
