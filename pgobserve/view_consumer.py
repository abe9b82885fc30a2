"""``view_as_consumer``: a Django or DRF view served over the socket, as DCRF's.

``{"action": "retrieve", "request_id": 1, "query": {...}, "parameters": {...}, "data": {...}}``
calls the view with the HTTP method the action maps to (default: create→PUT,
update→PATCH, list/retrieve→GET), ``query`` as ``request.GET``, ``parameters`` as the
view's keyword arguments (URL parameters), and replies with the response's status and
data (a DRF ``Response``'s data, else its content as text).

Differences from DCRF, each a DCRF fault: ``data`` is the request body (JSON), so a DRF
view's ``request.data`` holds it (DCRF puts a JSON string in ``request.POST`` and DRF sees
``{}``); ``request.META`` has the handshake's headers under Django's names
(``HTTP_HOST``, ``HTTP_COOKIE``, ...; DCRF's raw names are kept too), so
``request.get_host()`` and ``build_absolute_uri()`` work; every socket gets its own
consumer (DCRF returns one consumer instance that all sockets share, so each connection
overwrote the others' scope, user included); malformed ``query``/``parameters`` are a
400 and a failing view a 500, with the socket left open.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.template.response import SimpleTemplateResponse
from rest_framework import exceptions
from rest_framework.response import Response

from .consumers import AsyncAPIConsumer
from .errors import BadRequest
from .permissions import request_from_scope

__all__ = ["DjangoViewAsConsumer", "view_as_consumer"]

#: DCRF's mapping of actions to HTTP methods.
DEFAULT_ACTIONS = {"create": "PUT", "update": "PATCH", "list": "GET", "retrieve": "GET"}


def _object(kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """The message's ``name`` object ({} if absent); 400 if it is not an object."""
    value = kwargs.get(name, {})
    if not isinstance(value, dict):
        raise BadRequest({name: ["Expected an object."]})
    return value


class DjangoViewAsConsumer(AsyncAPIConsumer):
    """Calls ``view`` for each action named in ``actions`` (action name → HTTP method)."""

    view: Callable[..., HttpResponse] | None = None
    actions: dict[str, str] = {}

    async def handle_action(self, action: str, request_id: Any, **kwargs: Any) -> None:
        try:
            await self.check_permissions(action, **kwargs)
            if action not in self.actions:
                raise exceptions.MethodNotAllowed(method=action)
            content, status = await self.call_view(action=action, **kwargs)
            await self.reply(action=action, data=content, status=status, request_id=request_id)
        except Exception as exc:
            await self.handle_exception(exc, action, request_id)

    @database_sync_to_async
    def call_view(self, action: str, **kwargs: Any) -> tuple[Any, int]:
        request = request_from_scope(self.scope)
        args, view_kwargs = self.get_view_args(action=action, **kwargs)
        if "request" in view_kwargs:
            raise BadRequest({"parameters": [{"request": ["Unexpected field."]}]})
        request.method = self.actions[action]
        request.META["REQUEST_METHOD"] = request.method
        for key, value in _object(kwargs, "query").items():
            if isinstance(value, list):
                request.GET.setlist(key, value)
            else:
                request.GET[key] = value
        if "data" in kwargs:
            body = json.dumps(kwargs["data"]).encode()
            request._stream = io.BytesIO(body)
            # Django's private flag (not in its stubs): the body is unread.
            request._read_started = False  # type: ignore[attr-defined]
            request.META["CONTENT_TYPE"] = "application/json"
            request.META["CONTENT_LENGTH"] = str(len(body))
        view = type(self).view
        if view is None:
            raise ImproperlyConfigured(f"{type(self).__name__} has no view to call")
        response = view(request, *args, **view_kwargs)
        return self.response_content(response), response.status_code

    def get_view_args(self, action: str, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
        """(positional, keyword) arguments of the view beside the request: DCRF's
        ``parameters`` object, as the URL's parameters would be."""
        return [], _object(kwargs, "parameters")

    @staticmethod
    def response_content(response: HttpResponse) -> Any:
        """A DRF response's data if it encodes as JSON, else the rendered content as text
        (hex if it is not UTF-8)."""
        if isinstance(response, Response):
            try:
                json.dumps(response.data, cls=DjangoJSONEncoder)
                return response.data
            except (TypeError, ValueError):
                pass
        if isinstance(response, SimpleTemplateResponse):
            response.render()
        content = response.content
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return content.hex()


def view_as_consumer(
    wrapped_view: Callable[..., HttpResponse], mapped_actions: dict[str, str] | None = None
) -> Any:
    """The ASGI application serving ``wrapped_view`` over a socket (DCRF's function):
    ``re_path(r"^user/$", view_as_consumer(UserViewSet.as_view({"get": "retrieve"})))``.

    It makes one consumer per socket; ``.as_asgi()`` on the result (valid on DCRF's
    instance) gives the same application."""

    class DjangoViewWrapper(DjangoViewAsConsumer):
        view = staticmethod(wrapped_view)
        actions = dict(DEFAULT_ACTIONS if mapped_actions is None else mapped_actions)

    application = DjangoViewWrapper.as_asgi()
    application.as_asgi = DjangoViewWrapper.as_asgi
    return application
