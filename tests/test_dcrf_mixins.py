"""DCRF's CRUD mixin tests (upstream tests/test_generic_consumer.py), on pgobserve.

The scenarios and expected messages are DCRF 1.3.0's: only the imports differ, and the
writes are committed (``transaction=True``). Then what DCRF has and pgobserve lacked:
the ``perform_*`` hooks a DCRF consumer overrides, each mixin's signature compared with
DCRF's, ``PatchModelMixin`` without ``update``, and a missing ``data`` answered with a
400 where DCRF's socket crashes (a ``TypeError``).
"""

from __future__ import annotations

import inspect
from typing import Any

import djangochannelsrestframework.mixins as dcrf_mixins
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from pgobserve import mixins
from pgobserve.decorators import action
from pgobserve.generics import GenericAsyncAPIConsumer
from pgobserve.mixins import (
    CreateModelMixin,
    DeleteModelMixin,
    ListModelMixin,
    PatchModelMixin,
    RetrieveModelMixin,
    UpdateModelMixin,
)
from tests.dcrf_support import UserSerializer, ask, connected_communicator

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def reply(action: str, data: Any, status: int, request_id: Any, errors=None) -> dict:
    return {
        "action": action,
        "errors": errors or [],
        "response_status": status,
        "request_id": request_id,
        "data": data,
    }


def not_found(action: str, request_id: Any) -> dict:
    return reply(action, None, 404, request_id, ["Not found"])


create_user = database_sync_to_async(User.objects.create)
no_users = database_sync_to_async(lambda: not User.objects.exists())


# Upstream: DCRF's tests/test_generic_consumer.py (CRUD part) ------------------------------


async def test_generic_consumer():
    class AConsumer(GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

        @action()
        def test_sync_action(self, pk=None, **kwargs):
            user = self.get_object(pk=pk)
            return self.get_serializer(action_kwargs={"pk": pk}, instance=user).data, 200

    async with connected_communicator(AConsumer()) as communicator:
        message = {"action": "test_sync_action", "pk": 2, "request_id": 1}
        assert await ask(communicator, message) == not_found("test_sync_action", 1)
        user = await create_user(username="test1", email="test@example.com")

    async with connected_communicator(AConsumer()) as communicator:
        message = {"action": "test_sync_action", "pk": user.pk, "request_id": 2}
        expected = {"email": "test@example.com", "id": user.pk, "username": "test1"}
        assert await ask(communicator, message) == reply("test_sync_action", expected, 200, 2)


async def test_create_mixin_consumer():
    class AConsumer(CreateModelMixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    assert await no_users()
    async with connected_communicator(AConsumer()) as communicator:
        data = {"username": "test101", "email": "42@example.com"}
        response = await ask(communicator, {"action": "create", "data": data, "request_id": 1})
        user = await database_sync_to_async(User.objects.first)()
        assert response == reply("create", dict(data, id=user.pk), 201, 1)


async def test_list_mixin_consumer():
    class AConsumer(ListModelMixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    assert await no_users()
    async with connected_communicator(AConsumer()) as communicator:
        assert await ask(communicator, {"action": "list", "request_id": 1}) == reply(
            "list", [], 200, 1
        )
        u1 = await create_user(username="test1", email="42@example.com")
        u2 = await create_user(username="test2", email="45@example.com")
        assert await ask(communicator, {"action": "list", "request_id": 1}) == reply(
            "list",
            [
                {"email": "42@example.com", "id": u1.pk, "username": "test1"},
                {"email": "45@example.com", "id": u2.pk, "username": "test2"},
            ],
            200,
            1,
        )


async def test_retrieve_mixin_consumer():
    class AConsumer(RetrieveModelMixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    assert await no_users()
    async with connected_communicator(AConsumer()) as communicator:
        message = {"action": "retrieve", "pk": 100, "request_id": 1}
        assert await ask(communicator, message) == not_found("retrieve", 1)
        u1 = await create_user(username="test1", email="42@example.com")
        await create_user(username="test2", email="45@example.com")
        message = {"action": "retrieve", "pk": u1.pk - 1, "request_id": 1}
        assert await ask(communicator, message) == not_found("retrieve", 1)
        message = {"action": "retrieve", "pk": u1.pk, "request_id": 1}
        expected = {"email": "42@example.com", "id": u1.pk, "username": "test1"}
        assert await ask(communicator, message) == reply("retrieve", expected, 200, 1)


@pytest.mark.parametrize(
    ("mixin", "name", "data", "stored"),
    [  # upstream's test_update_mixin_consumer and test_patch_mixin_consumer
        (UpdateModelMixin, "update", {"username": "test101"}, ("test101", "42@example.com")),
        (PatchModelMixin, "patch", {"email": "00@example.com"}, ("test1", "00@example.com")),
    ],
)
async def test_update_and_patch_mixin_consumers(mixin, name, data, stored):
    class AConsumer(mixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    assert await no_users()
    async with connected_communicator(AConsumer()) as communicator:
        both = {"username": "test101", "email": "42@example.com"}
        message = {"action": name, "pk": 100, "data": both, "request_id": 1}
        assert await ask(communicator, message) == not_found(name, 1)
        u1 = await create_user(username="test1", email="42@example.com")
        await create_user(username="test2", email="45@example.com")
        message = {"action": name, "pk": u1.pk, "data": data, "request_id": 2}
        expected = {"username": stored[0], "email": stored[1], "id": u1.pk}
        assert await ask(communicator, message) == reply(name, expected, 200, 2)
    u1 = await database_sync_to_async(User.objects.get)(pk=u1.pk)
    assert (u1.username, u1.email) == stored


async def test_delete_mixin_consumer():
    class AConsumer(DeleteModelMixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    assert await no_users()
    async with connected_communicator(AConsumer()) as communicator:
        message = {"action": "delete", "pk": 100, "request_id": 1}
        assert await ask(communicator, message) == not_found("delete", 1)
        u1 = await create_user(username="test1", email="42@example.com")
        await create_user(username="test2", email="45@example.com")
        message = {"action": "delete", "pk": u1.pk - 1, "request_id": 1}
        assert await ask(communicator, message) == not_found("delete", 1)
        message = {"action": "delete", "pk": u1.pk, "request_id": 1}
        assert await ask(communicator, message) == reply("delete", None, 204, 1)
    assert not await database_sync_to_async(User.objects.filter(pk=u1.pk).exists)()


# What a DCRF consumer relies on beyond the upstream tests ---------------------------------


class HookedConsumer(
    CreateModelMixin, UpdateModelMixin, PatchModelMixin, DeleteModelMixin, GenericAsyncAPIConsumer
):
    """Overrides every hook as DCRF apps do: stamp the row, soft-delete instead of delete."""

    queryset = User.objects.all()
    serializer_class = UserSerializer

    def perform_create(self, serializer, **kwargs):
        serializer.save(first_name=f"created by {kwargs['action']} {kwargs['request_id']}")

    def perform_update(self, serializer, **kwargs):
        serializer.save(first_name=f"updated by {kwargs['action']} {kwargs['request_id']}")

    def perform_patch(self, serializer, **kwargs):
        serializer.save(first_name=f"patched by {kwargs['action']} {kwargs['request_id']}")

    def perform_delete(self, instance, **kwargs):
        instance.is_active = False
        instance.first_name = (
            f"deleted by {kwargs['action']} {kwargs['request_id']} pk {kwargs['pk']}"
        )
        instance.save()


async def test_perform_hooks_are_called_with_the_actions_kwargs():
    read = database_sync_to_async(
        lambda pk: User.objects.values("first_name", "is_active").get(pk=pk)
    )
    async with connected_communicator(HookedConsumer.as_asgi()) as communicator:
        data = {"username": "hooked", "email": "h@example.com"}
        created = await ask(communicator, {"action": "create", "data": data, "request_id": "c"})
        pk = created["data"]["id"]
        assert await read(pk) == {"first_name": "created by create c", "is_active": True}

        message = {"action": "update", "pk": pk, "data": dict(data, username="u"), "request_id": 7}
        assert (await ask(communicator, message))["data"]["username"] == "u"
        assert await read(pk) == {"first_name": "updated by update 7", "is_active": True}

        message = {"action": "patch", "pk": pk, "data": {"email": "p@example.com"}, "request_id": 8}
        assert (await ask(communicator, message))["data"]["email"] == "p@example.com"
        assert await read(pk) == {"first_name": "patched by patch 8", "is_active": True}

        message = {"action": "delete", "pk": pk, "request_id": 9}
        assert await ask(communicator, message) == reply("delete", None, 204, 9)
        assert await read(pk) == {"first_name": f"deleted by delete 9 pk {pk}", "is_active": False}


async def test_patch_mixin_alone_has_no_update_and_data_is_required():
    """As in DCRF, ``PatchModelMixin`` does not bring ``update``; a ``data``-less write is a
    400 naming ``data`` (DCRF: a TypeError that closes the socket)."""

    class AConsumer(PatchModelMixin, CreateModelMixin, GenericAsyncAPIConsumer):
        queryset = User.objects.all()
        serializer_class = UserSerializer

    user = await create_user(username="kept", email="k@example.com")
    async with connected_communicator(AConsumer.as_asgi()) as communicator:
        message = {"action": "update", "pk": user.pk, "data": {"username": "x"}, "request_id": 1}
        assert await ask(communicator, message) == reply(
            "update", None, 405, 1, ['Method "update" not allowed.']
        )
        required = [{"data": ["This field is required."]}]
        for name in ("patch", "create"):
            message = {"action": name, "pk": user.pk, "request_id": 2}
            assert await ask(communicator, message) == reply(name, None, 400, 2, required)
        message = {"action": "patch", "pk": user.pk, "data": None, "request_id": 3}
        assert await ask(communicator, message) == reply(
            "patch", None, 400, 3, [{"non_field_errors": ["No data provided"]}]
        )
    assert (await database_sync_to_async(User.objects.get)(pk=user.pk)).username == "kept"


#: Every mixin both packages have (DCRF's observer mixins live in its ``observer`` package).
DCRF_MIXINS = [name for name in mixins.__all__ if hasattr(dcrf_mixins, name)]


def own_methods(cls: type) -> dict[str, inspect.Signature]:
    """Signatures of the public methods ``cls`` defines or inherits from its mixin bases."""
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and inspect.isfunction(member)
    }


def parameters(signature: inspect.Signature) -> list[tuple[str, Any, bool]]:
    """(name, kind, has a default) of each parameter: what a caller or override sees."""
    return [(p.name, p.kind, p.default is not p.empty) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", DCRF_MIXINS)
def test_mixin_signatures_match_dcrf(name):
    dcrf, ours = getattr(dcrf_mixins, name), getattr(mixins, name)
    assert [c.__name__ for c in ours.__mro__[1:-1]] == [c.__name__ for c in dcrf.__mro__[1:-1]]
    dcrf_methods, our_methods = own_methods(dcrf), own_methods(ours)
    assert sorted(our_methods) == sorted(dcrf_methods)
    for method, signature in dcrf_methods.items():
        assert parameters(our_methods[method]) == parameters(signature), method
