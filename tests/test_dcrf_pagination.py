"""DCRF's pagination tests (upstream tests/test_generic_consumer.py, the paginated and
streamed lists), on pgobserve, then the inputs DCRF's paginator crashes on."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

from pgobserve import pagination
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import ListModelMixin, PaginatedModelListMixin, StreamedPaginatedListMixin
from pgobserve.pagination import WebsocketLimitOffsetPagination
from tests.dcrf_support import UserSerializer, ask, connected_communicator

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


class OnePerPage(WebsocketLimitOffsetPagination):
    default_limit = 1


def page(count: int, offset: int, results: list, limit: int = 1, request_id: Any = 1) -> dict:
    return {
        "action": "list",
        "errors": [],
        "response_status": 200,
        "request_id": request_id,
        "data": {"count": count, "limit": limit, "offset": offset, "results": results},
    }


def user_json(user) -> dict:
    return {"email": user.email, "id": user.pk, "username": user.username}


create_user = database_sync_to_async(User.objects.create)


class PagedConsumer(PaginatedModelListMixin, GenericAsyncAPIConsumer):
    queryset = User.objects.order_by("pk")
    serializer_class = UserSerializer
    pagination_class = OnePerPage


class StreamedConsumer(StreamedPaginatedListMixin, ListModelMixin, GenericAsyncAPIConsumer):
    queryset = User.objects.order_by("pk")
    serializer_class = UserSerializer
    pagination_class = OnePerPage


# Upstream ---------------------------------------------------------------------------------


async def test_list_mixin_consumer_with_pagination():
    assert not await database_sync_to_async(User.objects.exists)()
    async with connected_communicator(PagedConsumer()) as communicator:
        assert await ask(communicator, {"action": "list", "request_id": 1}) == page(0, 0, [])
        u1 = await create_user(username="test1", email="42@example.com")
        u2 = await create_user(username="test2", email="45@example.com")
        message = {"action": "list", "request_id": 1}
        assert await ask(communicator, message) == page(2, 0, [user_json(u1)])
        message = {"action": "list", "request_id": 1, "offset": 1}
        assert await ask(communicator, message) == page(2, 1, [user_json(u2)])
        message = {"action": "list", "request_id": 1, "offset": 2}
        assert await ask(communicator, message) == page(2, 2, [])


async def test_stream_paginated_list_mixin():
    assert not await database_sync_to_async(User.objects.exists)()
    async with connected_communicator(StreamedConsumer()) as communicator:
        users = [
            await create_user(username=f"test{n}", email=f"4{n}@example.com") for n in (1, 2, 3)
        ]
        await communicator.send_json_to({"action": "list", "request_id": 1})
        for offset, user in enumerate(users):
            assert await communicator.receive_json_from() == page(3, offset, [user_json(user)])
        assert await communicator.receive_nothing()


# Beyond upstream --------------------------------------------------------------------------


async def test_limit_and_offset_from_the_message_and_bad_values_fall_back():
    """DCRF crashes the socket on ``"limit": null`` or a list (``int()`` raises TypeError);
    here every value that is not a positive integer means the default."""
    users = [await create_user(username=f"u{n}", email=f"u{n}@example.com") for n in range(3)]
    everyone = [user_json(user) for user in users]
    async with connected_communicator(PagedConsumer.as_asgi()) as communicator:
        message = {"action": "list", "request_id": 2, "limit": 2, "offset": 1}
        assert await ask(communicator, message) == page(3, 1, everyone[1:], limit=2, request_id=2)
        message = {"action": "list", "request_id": 3, "limit": "2"}
        assert await ask(communicator, message) == page(3, 0, everyone[:2], limit=2, request_id=3)
        for bad in (None, [2], {"a": 1}, "abc", 0, -1, "1" * 5000):
            message = {"action": "list", "request_id": 4, "limit": bad, "offset": bad}
            assert await ask(communicator, message) == page(3, 0, everyone[:1], request_id=4), bad
        # A limit far past BIGINT and an offset past the rows: the rows there are.
        message = {"action": "list", "request_id": 5, "limit": 2**70}
        assert await ask(communicator, message) == page(3, 0, everyone, limit=2**70, request_id=5)
        message = {"action": "list", "request_id": 6, "offset": 2**70}
        assert await ask(communicator, message) == page(3, 2**70, [], request_id=6)
        message = {"action": "list", "request_id": 7, "view": 1}
        assert await ask(communicator, message) == {
            "action": "list",
            "errors": [{"view": ["Unexpected field."]}],
            "response_status": 400,
            "request_id": 7,
            "data": None,
        }


async def test_streamed_list_from_an_offset_and_without_pagination():
    users = [await create_user(username=f"s{n}", email=f"s{n}@example.com") for n in range(3)]
    async with connected_communicator(StreamedConsumer.as_asgi()) as communicator:
        await communicator.send_json_to({"action": "list", "request_id": "r", "offset": 1})
        for offset in (1, 2):
            assert await communicator.receive_json_from() == page(
                3, offset, [user_json(users[offset])], request_id="r"
            )
        assert await communicator.receive_nothing()

    class Unpaginated(StreamedConsumer):
        pagination_class = None  # DCRF: AttributeError on the list, the socket closes

    async with connected_communicator(Unpaginated.as_asgi()) as communicator:
        await communicator.send_json_to({"action": "list", "request_id": "all"})
        reply = await communicator.receive_json_from()
        assert (reply["response_status"], reply["data"]) == (200, [user_json(u) for u in users])
        assert await communicator.receive_nothing()


def test_defaults_come_from_pgobserve_settings():
    assert pagination.page_size() is None and pagination.default_pagination_class() is None
    path = "pgobserve.pagination.WebsocketLimitOffsetPagination"
    with override_settings(PGOBSERVE={"PAGE_SIZE": 10, "DEFAULT_PAGINATION_CLASS": path}):
        assert pagination.page_size() == 10
        assert pagination.default_pagination_class() is WebsocketLimitOffsetPagination
