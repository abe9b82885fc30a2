"""``AsyncAPIConsumer``: the DCRF envelope, action dispatch, and the pgobserve change feed.

Every reply is ``{"errors", "data", "action", "response_status", "request_id"}`` with the
``request_id`` echoed unchanged. Unlike DCRF, no client input crashes the socket: invalid
JSON, a non-object, a missing ``request_id``/``pk`` or a wrong type gets a 400 envelope,
and any unexpected exception is logged and answered with a 500 envelope (never a
traceback). The socket stays open in every case.

On connect the consumer attaches its ``watches`` to the process's ``hub.Hub``, which
receives the listener's ``pgobserve.change`` / ``pgobserve.resync`` messages for every
consumer of the process and hands each to the consumers it concerns.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from channels.consumer import AsyncConsumer
from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from rest_framework import exceptions

from . import hub, inprocess, inputs
from .errors import BadRequest, api_exception
from .identity import SocketIdentity
from .memberships import Memberships
from .permissions import AllowAny, BasePermission, ensure_async, instantiate, may_refuse
from .sendqueue import SendGate
from .watches import CONNECTION_ERRORS, WatchRegistry, database_outage

logger = logging.getLogger("pgobserve.consumers")

__all__ = ["AsyncAPIConsumer", "ActionMissingException"]


#: The 503 answer to a request the database could not serve (down, out of connections).
DATABASE_UNAVAILABLE = "The database is unavailable; try again."
#: The close code of a socket refused because the database could not check who it is
#: (4000 + HTTP's 503).
CLOSE_DATABASE_UNAVAILABLE = 4503
#: The listener's messages, handled without Channels' database-connection hop.
FEED_MESSAGES = frozenset({"pgobserve.change", "pgobserve.resync", "pgobserve.sequence"})


class ActionMissingException(exceptions.APIException):
    """405: the message names no ``action`` (DCRF's exception and words)."""

    status_code = 405
    default_detail = "Unable to find action in message body."


class APIConsumerMetaclass(type):
    """Record every method marked by ``@action`` under its action name."""

    def __new__(mcs, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> type:
        cls: Any = super().__new__(mcs, name, bases, body)
        cls.available_actions = {}
        for method_name in dir(cls):
            attr = getattr(cls, method_name, None)
            if getattr(attr, "action", False) is True:
                action_name = getattr(attr, "kwargs", {}).get("name", method_name)
                cls.available_actions[action_name] = method_name
        return cls


class AsyncAPIConsumer(AsyncJsonWebsocketConsumer, metaclass=APIConsumerMetaclass):
    """A JSON WebSocket consumer whose ``@action`` methods are called by name.

    ``permission_classes`` are checked on connect (``can_connect``), before every action
    (``has_permission``) and before every push. Default: ``AllowAny``.
    """

    #: pgobserve or DRF permission classes, their combinations (``&``, ``|``, ``~``) or
    #: instances; a list works as well as a tuple.
    permission_classes: Sequence[Any] = (AllowAny,)
    available_actions: dict[str, str]
    #: The ASGI connection scope (set when the consumer is called).
    scope: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: set[str] = set(self.groups or [])
        self.send_gate = SendGate(self)
        # One batch reaches a consumer as several messages only if it holds several feed
        # groups (shard groups of many rows, or a table group too).
        self.watches: WatchRegistry = WatchRegistry(
            may_get_more=lambda: self.hub is not None and self.hub.held(self.watches) > 1,
            writable=self.send_gate.writable,
            clear=self.send_gate.clear,
        )
        self.detached_tasks: list[asyncio.Task[Any]] = []
        #: The process's change feed (``hub.py``), once connected.
        self.hub: hub.Hub | None = None

    # connection ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__``, changed so the socket outlives trouble:
        channel-layer errors are waited out (``Memberships.receive``) instead of closing
        the socket with 1011, and the consumer leaves its groups and stops its tasks
        however it ends (a disconnect, a cancellation, a crash)."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is None:
            raise ImproperlyConfigured("pgobserve consumers need a channel layer: CHANNEL_LAYERS")
        self.channel_name = await self.channel_layer.new_channel()
        self.memberships = Memberships(
            self.channel_layer, self.channel_name, self.groups, on_rejoined=self.watches.resync
        )
        self.channel_receive = self.memberships.receive
        self.base_send = send
        try:
            await await_many_dispatch([receive, self.channel_receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            await self._end()

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        inprocess.ensure_started()
        try:
            if not await self._may_connect(message):
                await self.close()
                return
        except CONNECTION_ERRORS as exc:
            # The database cannot tell who this is: refuse for now; the client retries.
            database_outage().failed(exc)
            await self.close(code=CLOSE_DATABASE_UNAVAILABLE)
            return
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def _may_connect(self, message: dict[str, Any]) -> bool:
        """``can_connect`` of every permission, then the session and user checks (which
        join their groups first, so a logout right after is not missed)."""
        for permission in await self.get_permissions(action="connect"):
            if not await ensure_async(permission.can_connect)(
                scope=self.scope, consumer=self, message=message
            ):
                return False
        await self._attach()
        await self.memberships.join_all()
        self.memberships.start()
        self.send_gate.unsent()  # finds the server's protocol now, not on the first push
        identity = SocketIdentity.of(self)
        if identity is not None:
            await identity.watch()  # closes at once if the session already ended
            return not identity.closed
        return True

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self._end()
        await super().websocket_disconnect(message)  # disconnect(), then StopConsumer

    async def _attach(self) -> hub.Hub:
        """Join the process's change feed (resyncs from now on reach this consumer)."""
        if self.hub is None:
            self.hub = hub.hub_for(self.channel_layer)
            self.hub.attach(self.watches)
            await self.hub.start()
        return self.hub

    async def _end(self) -> None:
        """Stop every task of this consumer and leave its groups (idempotent)."""
        await self.watches.close()
        for task in list(self.detached_tasks):
            task.cancel()
        await asyncio.gather(*self.detached_tasks, return_exceptions=True)
        if self.hub is not None:
            feed, self.hub = self.hub, None
            await hub.leave(feed, self.watches)
        await self.memberships.close()

    def start_detached(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self.detached_tasks.append(task)
        task.add_done_callback(self._detached_done)
        return task

    def _detached_done(self, task: asyncio.Task[Any]) -> None:
        if task in self.detached_tasks:
            self.detached_tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("detached task failed", exc_info=task.exception())

    # groups (see ``memberships.py``) ------------------------------------------------------

    async def add_group(self, name: str) -> None:
        """Join a channel-layer group with this consumer's own channel (kept in
        ``self.groups``, left when the consumer ends): its messages go to the consumer's
        handlers (DCRF's model observer groups)."""
        await self.memberships.add(name)

    async def remove_group(self, name: str) -> None:
        await self.memberships.discard(name)

    async def hold_group(self, name: str, key: str | None = None) -> None:
        """Follow the feed group ``name`` (``groups.py``) for one more subscription,
        through the process's hub: all its messages, or (``key``, a ``groups.pk_key``)
        those naming that row. It is left when the last hold is released."""
        await (await self._attach()).hold(name, self.watches, key)

    async def release_group(self, name: str, key: str | None = None) -> None:
        if self.hub is not None:
            await self.hub.release(name, self.watches, key)

    # the change feed ----------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections (a thread hop) before every handler. The
        # change-feed handlers touch no database, and skipping the hop lets a burst of
        # shard messages be queued up in a few loop turns and merged into one read.
        if message.get("type") in FEED_MESSAGES:
            handler = getattr(self, message["type"].replace(".", "_"), None)
            if handler is not None:
                await handler(message)
                return
        await super().dispatch(message)

    # The hub (``hub.py``) hands the listener's messages to ``self.watches``; these take
    # the same messages sent to the consumer's own channel.

    async def pgobserve_change(self, message: dict[str, Any]) -> None:
        self.watches.changed(message.get("table", ""), message.get("pks"), message.get("batch"))

    async def pgobserve_sequence(self, message: dict[str, Any]) -> None:
        pass

    async def pgobserve_resync(self, message: dict[str, Any]) -> None:
        self.watches.resync()

    # permissions --------------------------------------------------------------------------

    async def get_permissions(self, action: str, **kwargs: Any) -> list[BasePermission]:
        return [instantiate(permission) for permission in self.permission_classes]

    async def check_permissions(self, action: str, **kwargs: Any) -> None:
        """Raise ``PermissionDenied`` (403) unless every permission allows ``action``."""
        for permission in await self.get_permissions(action=action, **kwargs):
            if not await ensure_async(permission.has_permission)(
                scope=self.scope, consumer=self, action=action, **kwargs
            ):
                raise exceptions.PermissionDenied()

    def _allows_every_push(self) -> bool:
        """Only ``AllowAny``, and pgobserve's own permission checking: a push's check
        cannot refuse, so it is skipped (it ran before each push of a fan-out)."""
        cls = type(self)
        return (
            cls.check_permissions is AsyncAPIConsumer.check_permissions
            and cls.get_permissions is AsyncAPIConsumer.get_permissions
            and not may_refuse(self)
        )

    async def may_push(self, action: str, **kwargs: Any) -> bool:
        """Whether a push may go out. A check that fails (the database is down, a bug)
        raises: the refresh is then retried, where a refusal would keep the client's old
        data until the row's next change."""
        if self._allows_every_push():
            return True
        try:
            await self.check_permissions(action, **kwargs)
            return True
        except exceptions.PermissionDenied:
            return False

    # receiving ----------------------------------------------------------------------------

    #: The largest text frame a client may send, in UTF-8 bytes; a larger one is answered
    #: 413 and the socket stays open. (Daphne closes the socket with 1009 above its own
    #: ``--websocket-max-message-size``, 1 MiB by default; uvicorn's limit is 16 MiB.)
    max_frame_bytes: int = 256 * 1024
    #: The deepest nesting of arrays and objects a message may have (400 beyond).
    max_json_depth: int = 32
    #: Message keys no action receives: ``self``, and the ``scope`` and ``consumer`` that
    #: ``has_permission(scope, consumer, action, **kwargs)`` takes beside the message's keys.
    reserved_keys: frozenset[str] = frozenset({"self", "scope", "consumer"})
    #: Keys an action receives only if it names them as parameters: the methods that
    #: actions pass their ``**kwargs`` on to take these beside them (DRF's and DCRF's
    #: ``filter_queryset(queryset, **kwargs)``, ``perform_create(serializer, **kwargs)``,
    #: ``perform_delete(instance, **kwargs)``, the update mixins' ``partial``).
    named_only_keys: frozenset[str] = frozenset({"queryset", "serializer", "instance", "partial"})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode a frame; whatever it holds, the client gets one envelope back."""
        if text_data is None:
            await self.reply(None, errors=["Send JSON text frames, not binary."], status=400)
            return
        try:
            inputs.check_size(text_data, self.max_frame_bytes)
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError):
            await self.reply(None, errors=["Invalid JSON."], status=400)
            return
        except Exception as exc:  # 413, too deep, not finite (or a bug: 500, logged)
            await self.handle_exception(exc, None, None)
            return
        await self.receive_json(content)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return inputs.loads(text_data, cls.max_json_depth)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.reply(None, errors=["Expected a JSON object."], status=400)
            return
        request_id = content.pop("request_id", None)
        try:
            action, content = await self.get_action_name(content, **kwargs)
        except KeyError:
            await self.handle_exception(ActionMissingException(), None, request_id)
            return
        except Exception as exc:
            await self.handle_exception(exc, None, request_id)
            return
        if not isinstance(action, str):
            await self.handle_exception(
                BadRequest({"action": ["Not a valid string."]}), None, request_id
            )
            return
        reserved = {key: ["Unexpected field."] for key in content if key in self.reserved_keys}
        if reserved:
            await self.handle_exception(BadRequest(reserved), action, request_id)
            return
        await self.handle_action(action, request_id=request_id, **content)

    async def get_action_name(
        self, content: dict[str, Any], **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """(action name, the action's keyword arguments); override for another envelope."""
        action = content.pop("action")
        return action, content

    async def handle_action(self, action: str, request_id: Any, **kwargs: Any) -> None:
        """Permission check, then existence check, then the call (DCRF's order)."""
        try:
            await self.check_permissions(action, **kwargs)
            if action not in self.available_actions:
                raise exceptions.MethodNotAllowed(method=action)
            method = getattr(self, self.available_actions[action])
            call = self.action_arguments(method, dict(kwargs, request_id=request_id, action=action))
            response = await method(**call)
            if isinstance(response, tuple):
                data, status = response
                await self.reply(action=action, data=data, status=status, request_id=request_id)
        except Exception as exc:
            await self.handle_exception(exc, action, request_id)

    def action_arguments(self, method: Any, message: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments ``method`` gets from a message (its ``request_id`` and
        ``action`` included): every key, as in DCRF, when it takes ``**kwargs``, except
        ``named_only_keys`` it does not name; 400 naming each key it cannot take and each
        parameter without a default that the message lacks."""
        parameters = inspect.signature(method).parameters.values()
        by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = {p.name: p for p in parameters if p.kind in by_keyword}
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        arguments: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for key, value in message.items():
            if key in named or (takes_any and key not in self.named_only_keys):
                arguments[key] = value
            elif key not in ("request_id", "action"):  # given only to actions that take them
                errors[key] = ["Unexpected field."]
        for name, parameter in named.items():
            if parameter.default is parameter.empty and name not in arguments:
                errors[name] = ["This field is required."]
        if errors:
            raise BadRequest(errors)
        return arguments

    async def handle_exception(self, exc: Exception, action: str | None, request_id: Any) -> None:
        """Answer every exception with an envelope; only unexpected ones are logged."""
        answer = api_exception(exc)  # Django's exceptions as DRF's (``errors.py``)
        if answer is not None:
            status, errors = answer.status_code, self._format_errors(answer.detail)
        elif isinstance(exc, CONNECTION_ERRORS):
            # The database is down or out of connections: the client may retry; the
            # outage is logged once per process (``database_outage``), not per request.
            database_outage().failed(exc)
            status, errors = 503, [DATABASE_UNAVAILABLE]
        else:
            logger.error(
                "error handling action %r (request_id %r)", action, request_id, exc_info=exc
            )
            status, errors = 500, [str(exceptions.APIException.default_detail)]
        try:
            await self.reply(action=action, errors=errors, status=status, request_id=request_id)
        except Exception:
            logger.exception("could not send the error reply")

    @staticmethod
    def _format_errors(errors: Any) -> list[Any]:
        if isinstance(errors, list):
            return errors
        return [errors]

    # sending ------------------------------------------------------------------------------

    async def reply(
        self,
        action: str | None,
        data: Any = None,
        errors: list[Any] | None = None,
        status: int = 200,
        request_id: Any = None,
    ) -> None:
        content = {
            "errors": errors or [],
            "data": data,
            "action": action,
            "response_status": status,
            "request_id": request_id,
        }
        if _plain_send(type(self)):
            await self._send_text(_ENCODER.encode(content))
        else:
            await self.send_json(content)
            if self.send_gate.count_sent():
                await asyncio.sleep(0)

    async def feed_reply(
        self, action: str, data: Any, status: int = 200, request_id: Any = None
    ) -> None:
        """A change feed's push: ``reply(action, data, status=status, request_id=...)``.

        The same bytes; when neither ``reply`` nor the JSON send path is overridden, the
        data's JSON is encoded once for every socket the same data object goes to (a
        shared read reaches them all with one object) and spliced into each envelope.
        Only for data pgobserve read: an object is never changed after it was pushed.
        """
        cls = type(self)
        if cls.reply is not AsyncAPIConsumer.reply or not _plain_send(cls):
            await self.reply(action, data, status=status, request_id=request_id)
            return
        global _last_pushed
        last = _last_pushed
        if last[0] is data:
            data_json = last[1]
        else:
            data_json = _ENCODER.encode(data)
            _last_pushed = (data, data_json)
        await self._send_text(envelope_json(data_json, action, status, request_id))

    async def _send_text(self, text: str) -> None:
        """What send_json → send → AsyncConsumer.send do for a text frame, without their
        three coroutines; then let other sockets run every ``YIELD_EVERY`` frames."""
        await self.base_send({"type": "websocket.send", "text": text})
        if self.send_gate.count_sent():
            await asyncio.sleep(0)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        # DjangoJSONEncoder: UUID, Decimal and datetime values (pks, serializer output) encode.
        return json.dumps(content, cls=DjangoJSONEncoder)


#: ``json.dumps(x, cls=DjangoJSONEncoder)`` is ``_ENCODER.encode(x)`` (the same options),
#: without building an encoder per call. An encoder keeps no state between calls.
_ENCODER = DjangoJSONEncoder()
#: (data object, its JSON) of the last push: a fan-out pushes one object to every socket.
_last_pushed: tuple[Any, str] = (object(), "")
#: The function of ``AsyncAPIConsumer.encode_json`` (a classmethod).
_OWN_ENCODE_JSON = AsyncAPIConsumer.__dict__["encode_json"].__func__
#: Consumer class → whether its JSON send path is ``AsyncAPIConsumer``'s own.
_plain_sends: dict[type, bool] = {}


def _plain_send(cls: type[AsyncAPIConsumer]) -> bool:
    """Whether ``cls`` sends JSON as ``AsyncAPIConsumer`` does: ``encode_json``,
    ``send_json``, ``send`` (both) not overridden, so a frame may go to ``base_send``
    directly with ``_ENCODER``'s text."""
    plain = _plain_sends.get(cls)
    if plain is None:
        plain = _plain_sends[cls] = (
            getattr(cls.encode_json, "__func__", None) is _OWN_ENCODE_JSON
            and cls.send_json is AsyncJsonWebsocketConsumer.send_json
            and cls.send is AsyncWebsocketConsumer.send
            and super(AsyncWebsocketConsumer, cls).send is AsyncConsumer.send
        )
    return plain


def envelope_json(data_json: str, action: str | None, status: int, request_id: Any) -> str:
    """``json.dumps({"errors": [], "data": data, "action": action, "response_status":
    status, "request_id": request_id}, cls=DjangoJSONEncoder)``, given ``data_json``, the
    JSON of ``data`` (``json.dumps``' separators: ", " and ": ")."""
    return (
        f'{{"errors": [], "data": {data_json}, "action": {_scalar_json(action)}, '
        f'"response_status": {_scalar_json(status)}, "request_id": {_scalar_json(request_id)}}}'
    )


def _scalar_json(value: Any) -> str:
    """``_ENCODER.encode(value)``, without the encoder's set-up for a str, an int or None
    (what ``JSONEncoder.encode`` and its C encoder write for exactly these types)."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return _ENCODER.encode(value)


# view_as_consumer: DCRF's ``djangochannelsrestframework.consumers.view_as_consumer`` ------
# It lives in ``view_consumer.py`` and is imported on first use: that module subclasses
# ``AsyncAPIConsumer``, so importing it here at load time would be a circular import.

__all__ += ["DjangoViewAsConsumer", "view_as_consumer"]  # noqa: F822 (see __getattr__)


def __getattr__(name: str) -> Any:
    if name in ("DjangoViewAsConsumer", "view_as_consumer"):
        from . import view_consumer

        return getattr(view_consumer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
