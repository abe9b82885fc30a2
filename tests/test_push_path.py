"""The push path (issue 10, per-push CPU): the envelope spliced from the data's JSON, sent
without Channels' send chain, is the bytes ``reply`` sends; overrides keep their path."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from pgobserve import consumers
from pgobserve.consumers import AsyncAPIConsumer, envelope_json
from pgobserve.instances import pushes_unchecked
from pgobserve.permissions import AllowAny, IsAuthenticated
from pgobserve.sendqueue import LOW_WATER, YIELD_EVERY, SendGate

VALUES = [
    None,
    0,
    -7,
    3.5,
    "",
    "plain",
    'quo"te \\ back',
    "ünïcode ✓ \u2028",
    [1, "a", None],
    {"b": 1, "a": [2, {"c": None}]},
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("1.10"),
    datetime.datetime(2026, 11, 27, 9, 30, 1, 123456, tzinfo=datetime.timezone.utc),
    True,
]


def dcrf_envelope(data: Any, action: Any, status: int, request_id: Any) -> str:
    return json.dumps(
        {
            "errors": [],
            "data": data,
            "action": action,
            "response_status": status,
            "request_id": request_id,
        },
        cls=DjangoJSONEncoder,
    )


@pytest.mark.parametrize("value", VALUES)
def test_envelope_json_is_the_dcrf_envelope(value):
    data_json = json.dumps(value, cls=DjangoJSONEncoder)
    for action, status in (("update", 200), ("delete", 204), (None, 200)):
        spliced = envelope_json(data_json, action, status, value)
        assert spliced == dcrf_envelope(value, action, status, value)
        assert list(json.loads(spliced)) == [
            "errors",
            "data",
            "action",
            "response_status",
            "request_id",
        ]


class Plain(AsyncAPIConsumer):
    pass


class OwnEncoder(AsyncAPIConsumer):
    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, cls=DjangoJSONEncoder, sort_keys=True)


class OwnSendJson(AsyncAPIConsumer):
    async def send_json(self, content, close=False):
        await super().send_json(dict(content, extra=1), close=close)


class OwnSend(AsyncAPIConsumer):
    async def send(self, text_data=None, bytes_data=None, close=False):
        await super().send(text_data=text_data + " ", close=close)


class OwnReply(AsyncAPIConsumer):
    async def reply(self, action, data=None, errors=None, status=200, request_id=None):
        await super().reply(action, {"wrapped": data}, errors, status, request_id)


def test_plain_send_only_without_overrides():
    assert consumers._plain_send(Plain)
    assert consumers._plain_send(OwnReply)  # reply is checked by feed_reply itself
    for cls in (OwnEncoder, OwnSendJson, OwnSend):
        assert not consumers._plain_send(cls)


async def frames(cls: type, call) -> list[str]:
    consumer = cls()
    sent: list[dict] = []

    async def base_send(message):
        sent.append(message)

    consumer.base_send = base_send
    await call(consumer)
    assert all(message["type"] == "websocket.send" for message in sent)
    return [message["text"] for message in sent]


@pytest.mark.parametrize("cls", [Plain, OwnEncoder, OwnSendJson, OwnSend, OwnReply])
async def test_feed_reply_sends_what_reply_sends(cls):
    data = {"id": 3, "value": decimal.Decimal("2.50"), "at": VALUES[-2], "note": "ü"}
    other = dict(data, id=4)

    async def pushes(consumer):
        # The same object twice (encoded once), then another one, then the first again.
        for body, request_id in ((data, 1), (data, "two"), (other, None), (data, {"r": 1})):
            await consumer.feed_reply("update", body, status=200, request_id=request_id)
        await consumer.feed_reply("delete", {"pk": 3}, status=204, request_id=5)

    async def replies(consumer):
        for body, request_id in ((data, 1), (data, "two"), (other, None), (data, {"r": 1})):
            await consumer.reply("update", body, status=200, request_id=request_id)
        await consumer.reply("delete", {"pk": 3}, status=204, request_id=5)

    assert await frames(cls, pushes) == await frames(cls, replies)


async def test_reply_bytes_unchanged():
    texts = await frames(Plain, lambda c: c.reply(None, errors=["Invalid JSON."], status=400))
    assert texts == [
        dcrf_envelope(None, None, 400, None).replace('"errors": []', '"errors": ["Invalid JSON."]')
    ]


def test_count_sent_yields_every_so_many_frames():
    gate = SendGate(consumer=None)
    due = [gate.count_sent() for _ in range(3 * YIELD_EVERY)]
    assert [i for i, d in enumerate(due) if d] == [
        YIELD_EVERY - 1,
        2 * YIELD_EVERY - 1,
        3 * YIELD_EVERY - 1,
    ]


class Refusing(AsyncAPIConsumer):
    permission_classes = (IsAuthenticated,)


class OwnMayPush(AsyncAPIConsumer):
    async def may_push(self, action, **kwargs):
        return False


def test_pushes_unchecked_only_for_allow_any_and_the_own_may_push():
    assert pushes_unchecked(Plain())
    assert not pushes_unchecked(Refusing())
    assert not pushes_unchecked(OwnMayPush())
    mixed = Plain()
    mixed.permission_classes = (AllowAny, IsAuthenticated)
    assert not pushes_unchecked(mixed)
    assert not pushes_unchecked(object())


class Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [*VALUES, 10**30, -(10**30), False, "\x00\x1f\ud800", Text("sub"), 1e300, float("nan")],
)
def test_scalar_json_is_the_encoder(value):
    assert consumers._scalar_json(value) == json.dumps(value, cls=DjangoJSONEncoder)


class _Transport:
    def __init__(self, size: int) -> None:
        self.size = size

    def get_write_buffer_size(self) -> int:
        return self.size


class _Protocol:  # an asyncio server's protocol (no ``sendMessage``)
    def __init__(self, size: int) -> None:
        self.transport = _Transport(size)


@pytest.mark.parametrize("size", [0, 1, LOW_WATER, LOW_WATER + 1])
async def test_clear_agrees_with_writable(size):
    gate = SendGate(consumer=None)
    gate._protocol = _Protocol(size)
    assert gate.clear() is (size <= LOW_WATER)
    if gate.clear():
        assert await gate.writable()
    gate.closed = True
    assert not gate.clear()
    assert not await gate.writable()
