"""What DCRF's ported tests share: ``connected_communicator`` and the user serializer.

DCRF's tests pass a consumer *instance* (``AConsumer()``) or whatever ``view_as_consumer``
returns as the ASGI application; both work with pgobserve, so the ported tests keep them.
Every receive is bounded (channels' default: 1 s; ``receive_nothing`` waits 0.1 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from rest_framework import serializers


class UserSerializer(serializers.ModelSerializer):
    """The serializer of DCRF's tests."""

    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email")


class Communicator(WebsocketCommunicator):
    """DCRF's test communicator: a receive that times out leaves the application running
    (channels' cancels it, so nothing can be received after a first timeout), and
    ``receive_many_json_from`` collects frames until one second passes without any."""

    connected = False

    async def receive_output(self, timeout: float = 1) -> Any:
        if self.future.done():
            self.future.result()  # the application failed: raise its exception
        try:
            async with asyncio.timeout(timeout):
                return await self.output_queue.get()
        except asyncio.TimeoutError:
            if self.future.done():
                self.future.result()
            raise

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        self.connected, subprotocol = await super().connect(timeout)
        return self.connected, subprotocol

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        await super().disconnect(code, timeout)
        self.connected = False

    async def receive_many_json_from(self, timeout: float = 1) -> list[Any]:
        messages = []
        while True:
            try:
                messages.append(await self.receive_json_from(timeout=timeout))
            except asyncio.TimeoutError:
                return messages


@asynccontextmanager
async def connected_communicator(
    application: Any, path: str = "/testws/", headers: list | None = None
) -> AsyncIterator[Communicator]:
    communicator = Communicator(application, path, headers)
    connected, _ = await communicator.connect()
    assert connected, "the consumer refused the connection"
    try:
        yield communicator
    finally:
        if communicator.connected:
            await communicator.disconnect()


async def ask(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from()
