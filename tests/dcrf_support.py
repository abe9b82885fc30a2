"""What DCRF's ported tests share: ``connected_communicator`` and the user serializer.

DCRF's tests pass a consumer *instance* (``AConsumer()``) or whatever ``view_as_consumer``
returns as the ASGI application; both work with pgobserve, so the ported tests keep them.
Every receive is bounded (channels' default: 1 s; ``receive_nothing`` waits 0.1 s).
"""

from __future__ import annotations

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


@asynccontextmanager
async def connected_communicator(
    application: Any, path: str = "/testws/", headers: list | None = None
) -> AsyncIterator[WebsocketCommunicator]:
    communicator = WebsocketCommunicator(application, path, headers)
    connected, _ = await communicator.connect()
    assert connected, "the consumer refused the connection"
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def ask(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from()
