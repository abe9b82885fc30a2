"""A bounded send queue per socket (internal): a client that does not read costs little and
is closed.

Under daphne, ``await send(...)`` never waits for the client: the frame is handed to
Twisted's transport, whose buffer grows without bound (a socket that never reads during
a 100,000-row update held ~50 MB), and a long run of sends never yields the event loop
(every other socket waits). So a consumer:

* yields the loop every ``YIELD_EVERY`` frames it sends;
* before each re-read, looks at the bytes still unsent on its socket (``pending_bytes``);
  above ``SEND_QUEUE_HIGH_WATER`` it is *congested*: it reads and sends nothing, while the
  changes that arrive are merged into its pending set (so when it resumes, one re-read
  sends the latest data of each row: the queue is coalesced, latest wins);
* resumes below ``LOW_WATER``; congested for longer than ``SEND_QUEUE_TIMEOUT``, it closes
  the socket with ``CLOSE_CODE`` (4408). The client mostly sees 1006 instead: the close
  frame waits behind the unsent bytes and daphne drops the connection about a second later.

Under servers whose ``send`` waits for the client (uvicorn) the unsent bytes stay small and
the consumer's flush simply waits in ``send``; changes still merge meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from . import conf

if TYPE_CHECKING:
    from ._types import Closes

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: The close code of a socket that stayed congested past ``SEND_QUEUE_TIMEOUT``
#: (4000 + HTTP's 408; daphne/autobahn refuse 1008 and 1013 from an application).
CLOSE_CODE = 4408
#: Below this many unsent bytes a congested socket resumes.
LOW_WATER = 64 * 1024
#: How often a congested socket looks at its unsent bytes again (seconds).
POLL = 0.05
#: A consumer yields the event loop after this many frames in a row.
YIELD_EVERY = 64

try:
    from twisted.internet.abstract import FileDescriptor
    from twisted.internet.tcp import Server as _TCP_SERVER
except ImportError:  # pragma: no cover - daphne is a dependency, but stay importable
    FileDescriptor = None  # type: ignore[assignment,misc]
    _TCP_SERVER = None  # type: ignore[assignment,misc]


def _is_daphne_protocol(obj: Any) -> bool:
    return type(obj).__module__.startswith("daphne.") and hasattr(obj, "sendMessage")


def server_protocol(send: Any, depth: int = 0) -> Any | None:
    """The server's protocol object behind an ASGI ``send``, through middleware wrappers.

    daphne 4 passes ``partial(Server.handle_reply, protocol)`` (older daphne: a lambda
    closing over it); uvicorn a bound method of its asyncio protocol; channels'
    ``SessionMiddleware`` wraps it as ``InstanceSessionWrapper.send`` (``.real_send``).
    """
    if send is None or depth > 6:
        return None
    if isinstance(send, functools.partial):
        for arg in send.args:
            if _is_daphne_protocol(arg):
                return arg
        return server_protocol(send.func, depth + 1)
    owner = getattr(send, "__self__", None)
    if owner is not None:
        if hasattr(getattr(owner, "transport", None), "get_write_buffer_size"):
            return owner
        inner = getattr(owner, "real_send", None)
        if inner is not None:
            return server_protocol(inner, depth + 1)
    inner = getattr(send, "__wrapped__", None)
    if inner is not None:
        return server_protocol(inner, depth + 1)
    for cell in getattr(send, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if _is_daphne_protocol(value):
            return value
        if callable(value) and value is not send:
            found = server_protocol(value, depth + 1)
            if found is not None:
                return found
    return None


def _twisted_unsent(transport: Any) -> int | None:
    """Unsent bytes of a Twisted transport (TLS wrappers included). ``vars()``, not
    ``getattr``: a TLS wrapper forwards unknown attributes and would count twice."""
    total = 0
    for _ in range(4):
        if transport is None or FileDescriptor is None:
            return None
        if isinstance(transport, FileDescriptor):  # tcp.Server, unix.Server
            return total + _buffered(transport)
        state = vars(transport)
        aggregator = state.get("_aggregator")  # tls.BufferingTLSTransport
        if aggregator is not None and hasattr(aggregator, "_bufferLeft"):
            total += aggregator.MAX_BUFFER_SIZE - aggregator._bufferLeft
        total += sum(map(len, state.get("_appSendBuffer") or ()))
        transport = state.get("transport")
    return None


def _buffered(transport: Any) -> int:
    """Bytes a Twisted file descriptor transport holds unsent."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def pending_bytes(protocol: Any) -> int | None:
    """Bytes queued but not yet sent on the socket of ``protocol``; None if unknown."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    if type(transport) is _TCP_SERVER and hasattr(protocol, "send_queue"):
        unsent = _buffered(transport)  # daphne over plain TCP, the common case: no lookups
    elif not hasattr(protocol, "sendMessage"):  # an asyncio server: its send already waits
        return transport.get_write_buffer_size()
    else:
        try:
            found = _twisted_unsent(transport)
        except (AttributeError, TypeError):  # a Twisted whose internals moved: no limit
            return None
        if found is None:
            return None
        unsent = found
    queue = protocol.send_queue
    return unsent + sum(len(i[0]) for i in queue) if queue else unsent


class SendGate:
    """One consumer's view of its socket's send queue (see the module docstring)."""

    def __init__(self, consumer: Closes) -> None:
        self.consumer = consumer
        self._protocol: Any = False  # False: not looked up yet
        self._since_yield = 0
        self.closed = False

    def unsent(self) -> int | None:
        if self._protocol is False:
            self._protocol = server_protocol(getattr(self.consumer, "base_send", None))
        return None if self._protocol is None else pending_bytes(self._protocol)

    def count_sent(self) -> bool:
        """Count a frame sent; True every ``YIELD_EVERY`` frames: time to let other sockets
        run (the caller yields; no coroutine per frame)."""
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            return True
        return False

    def clear(self) -> bool:
        """Whether ``writable()`` would answer True at once, without waiting: open, and at
        most ``LOW_WATER`` unsent (or unknown); asked before each flush without a coroutine."""
        if self.closed:
            return False
        unsent = self.unsent()
        return unsent is None or unsent <= LOW_WATER

    async def writable(self) -> bool:
        """Wait while the socket is congested; False once it was closed for it."""
        if self.clear():
            return True
        if self.closed:
            return False
        unsent = self.unsent()
        if unsent is None or unsent <= conf.send_queue_high_water():
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + conf.send_queue_timeout()
        while unsent is not None and unsent > LOW_WATER:
            if loop.time() >= deadline:
                logger.info(
                    "pgobserve closes a socket that does not read (%d bytes unsent for %.0f s)",
                    unsent,
                    conf.send_queue_timeout(),
                )
                self.closed = True
                await self.consumer.close(code=CLOSE_CODE)
                return False
            await asyncio.sleep(POLL)
            unsent = self.unsent()
        return True
