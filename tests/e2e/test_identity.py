"""A socket is closed (4401) within a second of its session ending or its user being
deactivated or deleted, whoever does it (``identity.py``), in both modes."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from pgobserve.identity import CLOSE_CODE

from .conftest import connect
from .test_queries import login

pytestmark = pytest.mark.django_db(transaction=True)

#: The promise is "within a second"; the wait allows for a loaded CI machine.
CLOSED_WITHIN = 3.0


async def closed_code(client) -> int:
    """The close code the server sends, waiting at most ``CLOSED_WITHIN``."""
    try:
        await asyncio.wait_for(client.conn.wait_closed(), CLOSED_WITHIN)
    except asyncio.TimeoutError:
        raise AssertionError(f"the socket is still open after {CLOSED_WITHIN}s") from None
    return client.conn.close_code


async def still_open(client) -> None:
    reply = await client.ask({"action": "retrieve", "pk": 0, "request_id": 1})
    assert reply["response_status"] == 404


def session_key(cookie: str) -> str:
    return cookie.split("=", 1)[1]


@pytest.mark.parametrize("end", ["logout", "deactivate", "delete user"])
async def test_socket_closed_when_its_session_ends_or_user_goes(live, db, end):
    (alice, alice_cookie), (_, bob_cookie) = await db(login, "alice"), await db(login, "bob")
    async with (
        connect(live, "/ws/users/", alice_cookie) as alice_ws,
        connect(live, "/ws/users/", bob_cookie) as bob_ws,
    ):
        await still_open(alice_ws)
        if end == "logout":  # Django's logout() deletes the session row
            await db(Session.objects.filter(session_key=session_key(alice_cookie)).delete)
        elif end == "deactivate":  # a queryset update: no signal would see it
            await db(get_user_model().objects.filter(pk=alice.pk).update, is_active=False)
        else:
            await db(get_user_model().objects.filter(pk=alice.pk).delete)
        assert await closed_code(alice_ws) == CLOSE_CODE
        await still_open(bob_ws)  # another user's socket is untouched


async def test_anonymous_sockets_are_not_affected(live, db):
    _, cookie = await db(login, "dave")
    async with (
        connect(live, "/ws/tasks/") as anonymous,
        connect(live, "/ws/users/", cookie) as dave,
    ):
        await db(Session.objects.filter(session_key=session_key(cookie)).delete)
        assert await closed_code(dave) == CLOSE_CODE  # the logout was seen...
        await still_open(anonymous)  # ...and the anonymous socket was left alone
