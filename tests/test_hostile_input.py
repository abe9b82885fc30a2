"""Hostile input gets an envelope, never a close, a 500 or a logged traceback.

Each case was reproduced against the code before: JSON nested ~990 deep closed the socket
(1011), a key named ``self`` raised outside the action's ``try``, ``scope``/``consumer``
and non-finite numbers gave 500s, a NUL character in a filter or a slug reached psycopg.
The fuzz at the end sends 1,200 generated frames (seeded) and asserts that each gets
exactly one envelope with a 2xx or 4xx status.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework import serializers
from tasks.models import Project, Task

from pgobserve.decorators import action
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ObserverModelInstanceMixin
from tests.e2e.conftest import envelope
from tests.e2e.consumers import AnyoneProjectConsumer as ProjectConsumer
from tests.e2e.consumers import AnyoneTaskConsumer as TaskConsumer
from tests.testapp.models import TextItem

pytestmark = pytest.mark.django_db(transaction=True)

BIGINT_MAX = 2**63 - 1
TOO_DEEP = ["JSON nested deeper than 32 levels."]
NOT_FINITE = ["Invalid JSON: numbers must be finite."]


class TextItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = TextItem
        fields = ("key", "value")


class TextItemConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    """A text primary key: a NUL in the pk reaches a text column."""

    queryset = TextItem.objects.all()
    serializer_class = TextItemSerializer


class StrictTaskConsumer(TaskConsumer):
    """The example's consumer plus actions with their own signatures."""

    @action()
    async def echo(self, text: str, request_id: Any = None) -> tuple[Any, int]:
        return text, 200  # no **kwargs: any other key is refused

    @action()
    async def take_instance(self, instance: Any = None, **kwargs: Any) -> tuple[Any, int]:
        return {"instance": instance, "others": sorted(kwargs)}, 200


def seed() -> tuple[int, int]:
    """A project and a task with fixed pks, so the seeded fuzz sends the same frames
    whatever the tests before it left in the sequences."""
    project = Project.objects.create(pk=1, name="P", slug="p")
    return project.pk, Task.objects.create(pk=1, project=project, title="t").pk


class Socket:
    """A connected ``WebsocketCommunicator`` sending raw text; every reply must be a frame."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator

    async def send(self, text: str | None = None, raw: bytes | None = None) -> None:
        frame = {"text": text} if raw is None else {"bytes": raw}
        await self.communicator.send_input({"type": "websocket.receive", **frame})

    async def reply(self) -> dict[str, Any]:
        output = await self.communicator.receive_output(timeout=5)
        assert output["type"] == "websocket.send", output  # not a close
        return json.loads(output["text"])

    async def ask(self, message: Any) -> dict[str, Any]:
        await self.send(message if isinstance(message, str) else json.dumps(message))
        return await self.reply()


async def connect(consumer: type, path: str) -> tuple[Socket, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(consumer.as_asgi(), path)
    connected, _ = await communicator.connect()
    assert connected
    return Socket(communicator), communicator


@pytest.fixture
async def tasks_socket():
    socket, communicator = await connect(StrictTaskConsumer, "/ws/tasks/")
    yield socket
    await communicator.disconnect()


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def still_works(socket: Socket, task_pk: int) -> None:
    reply = await socket.ask({"action": "retrieve", "pk": task_pk, "request_id": "ok"})
    assert (reply["response_status"], reply["data"]["id"]) == (200, task_pk), reply


async def test_deep_and_large_frames(tasks_socket, caplog):
    _, task_pk = await sync_to_async(seed)()
    deep = '{"action": "retrieve", "pk": 1, "x": ' + "[" * 990 + "]" * 990 + "}"
    assert len(deep) < 2100
    cases = [
        (deep, envelope(None, None, 400, None, TOO_DEEP)),
        ("[" * 200_000, envelope(None, None, 400, None, TOO_DEEP)),  # unbalanced, deep
        ("[" * 33 + "]" * 33, envelope(None, None, 400, None, TOO_DEEP)),
        ("[" * 32 + "]" * 32, envelope(None, None, 400, None, ["Expected a JSON object."])),
        ("[" * 20 + "}", envelope(None, None, 400, None, ["Invalid JSON."])),
        ('"' + "[" * 40 + '"', envelope(None, None, 400, None, ["Expected a JSON object."])),
        (
            "[" * 1_000_000,
            envelope(None, None, 413, None, [
                "The message has 1000000 bytes, more than the 262144 this socket accepts."
            ]),
        ),
        (
            json.dumps({"action": "list", "x": "é" * 150_000}, ensure_ascii=False),
            envelope(None, None, 413, None, [
                "The message has 300027 bytes, more than the 262144 this socket accepts."
            ]),
        ),
    ]  # fmt: skip
    for text, expected in cases:
        assert await tasks_socket.ask(text) == expected, text[:80]
    await still_works(tasks_socket, task_pk)
    assert errors_logged(caplog) == []


async def test_non_finite_numbers(tasks_socket, caplog):
    _, task_pk = await sync_to_async(seed)()
    for number in ("Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1" + "0" * 400 + ".0"):
        for message in (
            f'{{"action": "retrieve", "pk": {number}, "request_id": 1}}',
            f'{{"action": "subscribe_query", "filters": {{"project": {number}}}, "request_id": 2}}',
            f'{{"action": "list", "request_id": {number}}}',
        ):
            assert await tasks_socket.ask(message) == envelope(None, None, 400, None, NOT_FINITE)
    # Large but finite floats are numbers: an integer pk that no row can have is a 404.
    for pk in (1e300, -1e300, 1.5, 2**70, -(2**63) - 1, "99999999999999999999"):
        reply = await tasks_socket.ask({"action": "retrieve", "pk": pk, "request_id": 3})
        assert reply == envelope("retrieve", None, 404, 3, ["Not found"]), pk
        reply = await tasks_socket.ask({"action": "subscribe_instance", "pk": pk, "request_id": 4})
        assert reply == envelope("subscribe_instance", None, 404, 4, ["Not found"]), pk
    # 1.0 is the integer 1 (as in DCRF); 1.5 is not (it used to find row 1).
    reply = await tasks_socket.ask({"action": "retrieve", "pk": float(task_pk), "request_id": 5})
    assert reply["response_status"] == 200, reply
    await still_works(tasks_socket, task_pk)
    assert errors_logged(caplog) == []


async def test_keys_that_are_python_parameters(tasks_socket, caplog):
    _, task_pk = await sync_to_async(seed)()
    unexpected = ["Unexpected field."]
    retrieve = {"action": "retrieve", "pk": task_pk, "request_id": 1}
    for key in ("self", "scope", "consumer"):
        reply = await tasks_socket.ask({**retrieve, key: 1})
        assert reply == envelope("retrieve", None, 400, 1, [{key: unexpected}]), key
        # Refused before the permission check and the action lookup, whatever the action.
        reply = await tasks_socket.ask({"action": "nope", key: None, "request_id": 2})
        assert reply == envelope("nope", None, 400, 2, [{key: unexpected}]), key
    reply = await tasks_socket.ask({**retrieve, "self": 1, "scope": 2, "consumer": 3})
    all_three = {"self": unexpected, "scope": unexpected, "consumer": unexpected}
    assert reply == envelope("retrieve", None, 400, 1, [all_three])
    # Names the generic methods take beside **kwargs reach only an action that names them.
    for key in ("queryset", "serializer", "instance", "partial"):
        reply = await tasks_socket.ask({**retrieve, key: 1})
        assert reply == envelope("retrieve", None, 400, 1, [{key: unexpected}]), key
        reply = await tasks_socket.ask(
            {"action": "patch", "pk": task_pk, "data": {}, key: True, "request_id": 3}
        )
        assert reply == envelope("patch", None, 400, 3, [{key: unexpected}]), key
    message = {"action": "take_instance", "instance": 7, "pk": 1, "request_id": 4}
    reply = await tasks_socket.ask(message)
    assert reply == envelope(
        "take_instance", {"instance": 7, "others": ["action", "pk", "request_id"]}, 200, 4
    )
    # Other keys pass through to **kwargs, as in DCRF: they cannot clash.
    reply = await tasks_socket.ask({**retrieve, "kwargs": {"pk": 0}, "content": 1, "": 2})
    assert (reply["response_status"], reply["data"]["id"]) == (200, task_pk)
    # An action without **kwargs: unknown keys and missing parameters are named.
    reply = await tasks_socket.ask({"action": "echo", "text": "hi", "request_id": 5})
    assert reply == envelope("echo", "hi", 200, 5)
    reply = await tasks_socket.ask({"action": "echo", "text": "hi", "pk": 1, "request_id": 6})
    assert reply == envelope("echo", None, 400, 6, [{"pk": unexpected}])
    reply = await tasks_socket.ask({"action": "echo", "request_id": 7})
    assert reply == envelope("echo", None, 400, 7, [{"text": ["This field is required."]}])
    await still_works(tasks_socket, task_pk)
    assert errors_logged(caplog) == []


async def test_values_no_column_can_hold(tasks_socket, caplog):
    project_pk, task_pk = await sync_to_async(seed)()
    nul = ["Null characters are not allowed."]
    surrogate = ["Surrogate characters are not allowed: U+D800."]
    too_big = [f"Ensure this value is less than or equal to {BIGINT_MAX}."]
    too_small = [f"Ensure this value is greater than or equal to {-BIGINT_MAX - 1}."]
    cases = [
        ({"title__icontains": "a\x00b"}, {"title__icontains": nul}),
        ({"title__icontains": "\ud800"}, {"title__icontains": surrogate}),
        ({"project": 2**70}, {"project": too_big}),
        ({"project": str(-(2**63) - 1)}, {"project": too_small}),
        ({"project__in": [project_pk, 2**63]}, {"project__in": too_big}),
        (
            {"assignee": 2**31, "title__icontains": "\x00"},  # auth.User's id is an int4
            {"assignee": ["Ensure this value is less than or equal to 2147483647."],
             "title__icontains": nul},
        ),
    ]  # fmt: skip
    for request_id, (filters, errors) in enumerate(cases):
        message = {"action": "subscribe_query", "filters": filters, "request_id": request_id}
        reply = await tasks_socket.ask(message)
        assert reply == envelope("subscribe_query", None, 400, request_id, [errors]), filters
    # Serializer data: DRF's CharField refuses NUL and surrogates itself.
    for title, errors in (("a\x00", nul), ("\ud800", surrogate)):
        message = {"action": "patch", "pk": task_pk, "data": {"title": title}, "request_id": 9}
        reply = await tasks_socket.ask(message)
        assert reply == envelope("patch", None, 400, 9, [{"title": errors}])
    message = {"action": "patch", "pk": task_pk, "data": {"project": 2**70}, "request_id": 10}
    reply = await tasks_socket.ask(message)
    assert (reply["response_status"], list(reply["errors"][0])) == (400, ["project"]), reply
    await still_works(tasks_socket, task_pk)
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(
    ("consumer", "key", "value"),
    [
        (ProjectConsumer, "slug", "p\x00"),
        (ProjectConsumer, "slug", "\udfff"),
        (TextItemConsumer, "pk", "k\x00"),
        (TextItemConsumer, "pk", "\ud800"),
    ],
)
async def test_lookup_values_no_row_can_have_are_not_found(consumer, key, value, caplog):
    await sync_to_async(seed)()
    await sync_to_async(TextItem.objects.create)(key="k")
    socket, communicator = await connect(consumer, "/ws/x/")
    try:
        for name in ("retrieve", "subscribe_instance", "unsubscribe_instance"):
            reply = await socket.ask({"action": name, key: value, "request_id": 1})
            assert reply == envelope(name, None, 404, 1, ["Not found"]), name
        good = "p" if consumer is ProjectConsumer else "k"
        reply = await socket.ask({"action": "subscribe_instance", key: good, "request_id": 2})
        assert reply == envelope("subscribe_instance", None, 201, 2)
    finally:
        await communicator.disconnect()
    assert errors_logged(caplog) == []


async def test_unexpected_exceptions_are_still_500_with_one_log_line(caplog):
    class Buggy(TaskConsumer):
        @action()
        async def boom(self, **kwargs: Any) -> None:
            raise KeyError("a bug")

    socket, communicator = await connect(Buggy, "/ws/tasks/")
    try:
        reply = await socket.ask({"action": "boom", "request_id": 1})
        assert reply == envelope("boom", None, 500, 1, ["A server error occurred."])
    finally:
        await communicator.disconnect()
    assert errors_logged(caplog) == ["error handling action 'boom' (request_id 1)"]


def test_nesting_check_reads_strings_as_json_does():
    from pgobserve import inputs

    within = inputs.nesting_within
    assert within('{"a": [1, {"b": []}]}', 4) and not within('{"a": [1, {"b": []}]}', 3)
    assert within('["]]]]", "[[[[", "\\"[[[", "\\\\"]', 1)
    assert within("[]" * 100_000, 1)
    assert not within("[" * 1_000_000, 32)
    assert not within('["\\', 0)  # an unterminated string ends the text


# The fuzz ---------------------------------------------------------------------------------

ACTIONS = [
    "list", "retrieve", "patch", "subscribe_instance", "unsubscribe_instance",
    "subscribe_query", "unsubscribe_query", "echo", "take_instance", "create", "delete",
    "nope", "", "\x00", "__init__", "receive", "handle_action", "dispatch",
]  # fmt: skip
KEYS = [
    "pk", "request_id", "data", "filters", "text", "instance", "self", "scope", "consumer",
    "kwargs", "content", "queryset", "serializer", "partial", "action", "title", "", "\x00",
    "\ud800", "__class__",
]  # fmt: skip
FILTER_KEYS = [
    "project", "project__in", "done", "title__icontains", "assignee", "assignee__isnull",
    "title", "nope", "project__gt", "id", "\x00",
]  # fmt: skip
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1E999", "1" + "0" * 320 + ".5"]


class Fuzz:
    """Seeded generators of messages, hostile values and broken text."""

    def __init__(self, seed: int, pks: list[int]) -> None:
        self.random = random.Random(seed)
        self.pks = pks

    def scalar(self) -> Any:
        r = self.random
        return r.choice([
            0, 1, -1, *self.pks, 2**31, 2**63, 2**70, -(2**63) - 1, 1.5, 1e300, -0.0,
            True, False, None, "", "1", str(self.pks[0]), "abc", "\x00", "a\x00", "\ud800",
            "x" * r.randrange(2000), "é", "NaN", "1e400", r.random(), r.randrange(-(2**80), 2**80),
        ])  # fmt: skip

    def value(self, depth: int = 0) -> Any:
        r = self.random
        shape = r.random()
        if depth > 3 or shape < 0.6:
            return self.scalar()
        if shape < 0.8:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {self.key(): self.value(depth + 1) for _ in range(r.randrange(4))}

    def key(self) -> str:
        return self.random.choice(KEYS + FILTER_KEYS)

    def message(self) -> Any:
        r = self.random
        if r.random() < 0.05:
            return self.value()
        message: dict[str, Any] = {}
        if r.random() < 0.95:
            message["action"] = r.choice(ACTIONS) if r.random() < 0.9 else self.value()
        if r.random() < 0.8:
            message["request_id"] = self.value()
        if r.random() < 0.6:
            message["pk"] = r.choice(self.pks) if r.random() < 0.5 else self.scalar()
        if r.random() < 0.4:
            message["filters"] = {
                r.choice(FILTER_KEYS): self.value(2) for _ in range(r.randrange(4))
            }
        if r.random() < 0.3:
            message["data"] = {r.choice(["title", "done", "project"]): self.scalar()}
        for _ in range(r.choice([0, 0, 1, 2])):
            message[self.key()] = self.value(1)
        return message

    def frame(self) -> tuple[str | None, bytes | None]:
        r = self.random
        kind = r.random()
        text = json.dumps(self.message(), ensure_ascii=r.random() < 0.5)
        if kind < 0.5:
            return text, None
        if kind < 0.7:  # a hostile number in place of a value
            spots = [i for i, c in enumerate(text) if c in ":[,"]
            at = r.choice(spots) + 1 if spots else 0
            return text[:at] + r.choice(HOSTILE_NUMBERS) + text[at:], None
        if kind < 0.85:  # truncated
            return text[: r.randrange(len(text) + 1)], None
        if kind < 0.9:  # deep
            depth = r.randrange(20, 3000)
            inner = "[" * depth + "]" * depth * (r.random() < 0.7)
            return text[:-1] + ', "x": ' + inner + "}" if text.endswith("}") else inner, None
        if kind < 0.97:  # noise
            alphabet = '[]{}",:\\0123456789.eE+-nultrfas \x00é\ud800'
            return "".join(r.choice(alphabet) for _ in range(r.randrange(60))), None
        return None, r.randbytes(r.randrange(1, 100))


async def test_fuzz_every_frame_gets_exactly_one_envelope(tasks_socket, caplog):
    project_pk, task_pk = await sync_to_async(seed)()
    fuzz = Fuzz(seed=20240607, pks=[task_pk, project_pk])
    statuses: dict[int, int] = {}
    for number in range(1200):
        text, raw = fuzz.frame()
        await tasks_socket.send(text, raw)
        # A sentinel after each frame: the frame's replies are exactly those before its own.
        await tasks_socket.send(json.dumps({"action": "nope", "request_id": ["sentinel", number]}))
        replies = []
        while (reply := await tasks_socket.reply())["request_id"] != ["sentinel", number]:
            replies.append(reply)
        assert len(replies) == 1, (text, raw, replies)
        (reply,) = replies
        assert list(reply) == ["errors", "data", "action", "response_status", "request_id"]
        status = reply["response_status"]
        assert 200 <= status < 300 or (400 <= status < 500 and reply["errors"]), (text, reply)
        statuses[status] = statuses.get(status, 0) + 1
    # The fuzz reached the actions, not only the decoder.
    assert {200, 201, 400, 404, 405} <= set(statuses), statuses
    await still_works(tasks_socket, task_pk)
    assert errors_logged(caplog) == []
