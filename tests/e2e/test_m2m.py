"""Many-to-many changes push an ``update`` of the owning rows, in both modes.

``test_m2m_observer`` is DCRF's upstream test (tests/test_model_observer.py) with its
imports changed and committed writes; every ``receive_nothing()`` is made exact by the
next expected push (a spurious push would come first). The other tests do what DCRF
cannot: raw SQL on ``auth_user_groups`` (no Django, no ``m2m_changed`` signal), a TRUNCATE,
and a query subscription filtered on the m2m gaining and losing members.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from .conftest import connect, envelope
from .test_dcrf_port import create_user
from .test_related import expect, subscribed

pytestmark = pytest.mark.django_db(transaction=True)


def user_json(user, groups) -> dict:
    return {
        "email": user.email,
        "id": user.pk,
        "username": user.username,
        "groups": [g.pk for g in groups],
    }


async def test_m2m_observer(live, db):
    async with connect(live, "/ws/dcrf-m2m-users/") as ws:
        u1 = await db(create_user, "test1", "42@example.com")
        u2 = await db(create_user, "test2", "45@example.com")
        assert await ws.ask(
            {"action": "subscribe_instance", "pk": u1.pk, "request_id": 4}
        ) == envelope("subscribe_instance", None, 201, 4)

        g1 = await db(Group.objects.create, name="group1")
        g2 = await db(Group.objects.create, name="group2")
        g3 = await db(Group.objects.create, name="group3")
        g4 = await db(Group.objects.create, name="group4")

        await db(u1.groups.add, g1, g2)
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2]), 200, 4)

        await db(u2.groups.add, g4)  # nothing for u1 ...
        await db(g1.user_set.add, u2)  # ... nor this: the next message is the next update
        await db(g3.user_set.add, u1, u2)
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2, g3]), 200, 4)

        await db(g1.user_set.remove, u1)
        assert await ws.recv() == envelope("update", user_json(u1, [g2, g3]), 200, 4)

        await db(u1.groups.clear)
        assert await ws.recv() == envelope("update", user_json(u1, []), 200, 4)

        await db(u2.groups.clear)  # nothing
        await db(u1.groups.set, [g1, g4])
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g4]), 200, 4)

        await db(u2.groups.set, [g1, g4])  # nothing
        await db(u1.groups.set, [g1, g2, g3, g4])
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2, g3, g4]), 200, 4)

        await db(g4.user_set.clear)
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2, g3]), 200, 4)

        await db(g3.user_set.remove, u1)
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2]), 200, 4)


async def test_raw_sql_on_the_through_table_pushes_updates(live, db, raw_conn):
    u1 = await db(create_user, "raw1", "r1@example.com")
    u2 = await db(create_user, "raw2", "r2@example.com")
    g1, g2, g3 = [await db(Group.objects.create, name=f"raw-group{i}") for i in (1, 2, 3)]

    def sql(statement: str, *params: int) -> None:
        raw_conn.execute(statement, params)

    insert = "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)"
    async with connect(live, "/ws/dcrf-m2m-users/") as ws:
        await subscribed(ws, {"action": "subscribe_instance", "pk": u1.pk, "request_id": 1})

        await db(sql, insert + ", (%s, %s)", u1.pk, g1.pk, u1.pk, g2.pk)  # add
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g2]), 200, 1)

        await db(sql, insert, u2.pk, g1.pk)  # another user's row: nothing ...
        await db(sql, "DELETE FROM auth_user_groups WHERE user_id = %s AND group_id = %s",
                 u1.pk, g1.pk)  # fmt: skip
        assert await ws.recv() == envelope("update", user_json(u1, [g2]), 200, 1)  # remove

        def replace() -> None:  # set(): one transaction
            with raw_conn.transaction():
                sql("DELETE FROM auth_user_groups WHERE user_id = %s", u1.pk)
                sql(insert + ", (%s, %s)", u1.pk, g1.pk, u1.pk, g3.pk)

        await db(replace)
        assert await ws.recv() == envelope("update", user_json(u1, [g1, g3]), 200, 1)

        await db(sql, "DELETE FROM auth_user_groups WHERE group_id = %s", g3.pk)  # reverse
        assert await ws.recv() == envelope("update", user_json(u1, [g1]), 200, 1)

        await db(sql, "TRUNCATE auth_user_groups")  # unknown rows: all watched re-checked
        assert await ws.recv() == envelope("update", user_json(u1, []), 200, 1)


async def test_a_query_filtered_on_the_m2m_gains_and_loses_members(live, db, raw_conn):
    u1, u2, u3 = [await db(create_user, f"member{i}", f"m{i}@example.com") for i in (1, 2, 3)]
    group = await db(Group.objects.create, name="members")
    other = await db(Group.objects.create, name="others")

    async with connect(live, "/ws/group-members/") as ws:
        reply = await subscribed(
            ws, {"action": "subscribe_query", "filters": {"groups": group.pk}, "request_id": "q"}
        )
        assert reply["data"] == []

        await db(u1.groups.add, group)
        assert await ws.recv() == envelope("create", user_json(u1, [group]), 201, "q")
        await db(group.user_set.add, u2)
        assert await ws.recv() == envelope("create", user_json(u2, [group]), 201, "q")

        await db(u3.groups.add, other)  # not a member: nothing ...
        await db(u1.groups.add, other)  # ... but a member's groups changed
        assert await ws.recv() == envelope("update", user_json(u1, [group, other]), 200, "q")
        u1.username += "-renamed"  # a member in two groups: one update, not one per group
        await db(u1.save)
        assert await ws.recv() == envelope("update", user_json(u1, [group, other]), 200, "q")

        await db(u1.groups.remove, group)
        assert await ws.recv() == envelope("delete", {"pk": u1.pk}, 204, "q")
        await db(u2.groups.clear)
        assert await ws.recv() == envelope("delete", {"pk": u2.pk}, 204, "q")
        await db(u1.groups.set, [group])
        assert await ws.recv() == envelope("create", user_json(u1, [group]), 201, "q")

        insert = "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)"
        await db(raw_conn.execute, insert, [u3.pk, group.pk])
        assert await ws.recv() == envelope("create", user_json(u3, [group, other]), 201, "q")
        await db(raw_conn.execute, "DELETE FROM auth_user_groups WHERE group_id = %s", [group.pk])
        await expect(
            ws,
            [
                envelope("delete", {"pk": u1.pk}, 204, "q"),
                envelope("delete", {"pk": u3.pk}, 204, "q"),
            ],
        )
        await db(u2.groups.add, group)  # nothing else was on its way
        assert await ws.recv() == envelope("create", user_json(u2, [group]), 201, "q")


async def test_a_query_subscription_shows_m2m_changes_of_its_rows(live, db, raw_conn):
    """Filtered on something else (here: nothing), the held rows still get the update."""
    u1 = await db(create_user, "held", "h@example.com")
    group = await db(Group.objects.create, name="shown")
    async with connect(live, "/ws/group-members/") as ws:
        reply = await subscribed(ws, {"action": "subscribe_query", "request_id": "all"})
        assert reply["data"] == [user_json(u1, [])]
        await db(u1.groups.add, group)
        assert await ws.recv() == envelope("update", user_json(u1, [group]), 200, "all")
        await db(raw_conn.execute, "DELETE FROM auth_user_groups WHERE user_id = %s", [u1.pk])
        assert await ws.recv() == envelope("update", user_json(u1, []), 200, "all")
