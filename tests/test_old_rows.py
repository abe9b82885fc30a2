"""Old rows: tables whose triggers keep the rows as they were before each UPDATE, DELETE
and TRUNCATE in ``pgobserve_old_row`` under the writing transaction's id, and name that
id in their payloads (``"x"``), for model observers. The SQL and payload side, first pure,
then on a real PostgreSQL; and ``registry.load_consumers``, which finds such models."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from psycopg.sql import SQL, Identifier

from pgobserve import payload, registry, sql
from pgobserve.payload import Change, PayloadError
from tests.fix_listen import pk_list, pks_of
from tests.testapp.models import Item, TestModelWithCustomPK

CUSTOM_PK = TestModelWithCustomPK._meta.db_table
ITEM = Item._meta.db_table
USER = "auth_user"
OLD_ROWS_TABLE = sql.quote_ident(sql.OLD_ROWS)


# sql.py ------------------------------------------------------------------------------------


def test_a_spec_with_old_rows_keeps_them_for_update_delete_and_truncate():
    spec = sql.TableSpec("app_item", "id", pk_kind="int", old_rows=True)
    function = sql.render_function(spec)
    assert "tx_id text := pg_current_xact_id()::text;" in function
    keep = f"INSERT INTO {OLD_ROWS_TABLE} (xid, tbl, image) SELECT pg_current_xact_id(), 'app_item'"
    # UPDATE and DELETE keep their transition table's rows; TRUNCATE keeps the whole table.
    assert function.count(keep) == 2
    assert re.search(
        r"IF TG_OP IN \('UPDATE', 'DELETE'\) THEN\s+"
        + re.escape(keep)
        + r".* FROM pgobserve_old r;",
        function,
    )
    assert re.search(
        r"IF TG_OP = 'TRUNCATE' THEN\s+" + re.escape(keep) + r".* FROM \"app_item\" r;", function
    )
    # Every payload the function can send names the transaction.
    assert function.count('"pk":') == function.count(""""x":' || tx_id || ',"pk":""")
    statements = sql.render_install(spec)
    assert statements[:2] == sql.render_old_rows_table()
    triggers = [s for s in statements if s.startswith("CREATE TRIGGER")]
    assert [t.split(" ON ")[0] for t in triggers] == [
        'CREATE TRIGGER "pgobserve_insert" AFTER INSERT',
        'CREATE TRIGGER "pgobserve_update" AFTER UPDATE',
        'CREATE TRIGGER "pgobserve_delete" AFTER DELETE',
        # BEFORE: the rows are still there to be kept.
        'CREATE TRIGGER "pgobserve_truncate" BEFORE TRUNCATE',
    ]
    assert sql.signature(spec) != sql.signature(sql.TableSpec("app_item", "id", pk_kind="int"))


def test_the_old_rows_table_is_unlogged_indexed_by_xid_and_created_only_if_missing():
    create, index = sql.render_old_rows_table()
    assert create.startswith(f"CREATE UNLOGGED TABLE IF NOT EXISTS {OLD_ROWS_TABLE} (")
    assert "xid xid8 NOT NULL" in create and "image jsonb NOT NULL" in create
    assert index == f'CREATE INDEX IF NOT EXISTS "pgobserve_old_row_xid" ON {OLD_ROWS_TABLE} (xid)'


WEIRD = 'we"ird; drop table x; --'

#: Signatures of specs without old rows, as installed before old rows existed (the commit
#: before 07021fd): an upgrade must not mark every installed table OUTDATED.
UNCHANGED = [
    (sql.TableSpec("t", "id", pk_kind="int"), "pgobserve:v2:c4b8efcd508b7f8d"),
    (sql.TableSpec("app_item", "id"), "pgobserve:v2:6f265fff73abd9fa"),
    (sql.TableSpec("app_uuid", "id", "chan", "uuid"), "pgobserve:v2:0d05aa34530fd678"),
    (
        sql.TableSpec("django_session", "session_key", pk_kind="digest"),
        "pgobserve:v2:1c51119d6d7c156e",
    ),
    (sql.TableSpec(WEIRD, 'i"d', "chan'nel", "int"), "pgobserve:v2:7104e25784ec90dc"),
]


@pytest.mark.parametrize(("spec", "signature"), UNCHANGED)
def test_specs_without_old_rows_render_the_sql_they_rendered_before(spec, signature):
    assert sql.signature(spec) == signature
    text = "\n".join(sql.render_install(spec))
    assert sql.OLD_ROWS not in text and "tx_id" not in text and "BEFORE" not in text
    assert '"x":' not in text


def test_weird_names_with_old_rows_never_appear_unquoted():
    spec = sql.TableSpec(WEIRD, 'i"d', "chan'nel", old_rows=True)
    text = "\n".join(sql.render_install(spec))
    unquoted = (
        text.replace('"we""ird; drop table x; --"', "")
        .replace('"t":"we\\"ird; drop table x; --"', "")
        .replace("'we\"ird; drop table x; --'", "")  # the tbl column of the old rows
    )
    assert "drop table x" not in unquoted


# payload.py --------------------------------------------------------------------------------


@pytest.mark.parametrize("xid", [1, 748, 2**32, payload.MAX_XID])
def test_decode_accepts_a_transaction_id(xid):
    text = '{"v":1,"t":"t","op":"U","x":%d,"pk":[1,2]}' % xid
    assert payload.decode(text) == Change("t", "U", (1, 2), xid)
    assert payload.decode('{"v":1,"t":"t","op":"T","x":%d,"pk":null}' % xid).xid == xid
    assert payload.decode('{"v":1,"t":"t","op":"U","pk":[1]}').xid is None


@pytest.mark.parametrize(
    "x", ['"7"', "7.0", "7e0", "0", "-1", str(payload.MAX_XID + 1), "true", "false", "null", "[7]"]
)
def test_decode_rejects_a_transaction_id_that_no_trigger_writes(x):
    with pytest.raises(PayloadError):
        payload.decode('{"v":1,"t":"t","op":"U","x":%s,"pk":[1]}' % x)


PKS = {
    "int": list(range(1, 5000)),
    "bigint": [2**63 - 1 - i for i in range(2000)],
    "uuid": [str(uuid.UUID(int=i)) for i in range(1000)],
    "text": [f'k"{i}\\' + "é" * (i % 7) for i in range(2000)],
}


@pytest.mark.parametrize("kind", PKS)
@pytest.mark.parametrize("xid", [5, payload.MAX_XID])
def test_encode_with_a_transaction_id_round_trips_under_the_limit(kind, xid):
    payloads = list(payload.encode("app_item", "U", PKS[kind], xid))
    assert len(payloads) > 1
    assert all(len(p.encode()) <= sql.PAYLOAD_LIMIT for p in payloads)
    decoded = [payload.decode(p) for p in payloads]
    assert {c.xid for c in decoded} == {xid}
    assert [pk for c in decoded for pk in c.pks] == PKS[kind]


def test_encode_keeps_room_for_the_widest_transaction_id_at_the_chunk_edge():
    widest = sql.payload_header("t", "I", payload.MAX_XID)
    budget = sql.PAYLOAD_LIMIT - len(widest) - len("]}")
    exact, over = "x" * (budget - 2), "x" * (budget - 1)  # JSON adds two quotes
    (full,) = payload.encode("t", "I", [exact], payload.MAX_XID)
    assert len(full.encode()) == sql.PAYLOAD_LIMIT
    # A short id leaves the same budget: the split never depends on the transaction.
    (short,) = payload.encode("t", "I", [exact], 7)
    assert len(short) == sql.PAYLOAD_LIMIT - (len(str(payload.MAX_XID)) - 1)
    assert list(payload.encode("t", "I", [over], 7)) == ['{"v":1,"t":"t","op":"I","x":7,"pk":null}']
    assert payload.decode(short) == Change("t", "I", (exact,), 7)


# on a real PostgreSQL ----------------------------------------------------------------------


def committed(conn: psycopg.Connection, *statements: Any) -> int:
    """Run ``statements`` (SQL, or (SQL, params)) in one transaction; its id (xid8)."""
    with conn.transaction():
        for statement in statements:
            query, params = statement if isinstance(statement, tuple) else (statement, None)
            conn.execute(query, params)
        return int(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])


def kept(conn: Any, xid: int) -> list[tuple[str, dict[str, Any]]]:
    """(table, image) of the old rows a transaction left, in the order they were kept."""
    rows = conn.execute(
        f"SELECT tbl, image FROM {OLD_ROWS_TABLE} WHERE xid = %s::text::xid8 ORDER BY id",
        [str(xid)],
    ).fetchall()
    return [(table, image) for table, image in rows]


def current_xid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_update_delete_and_truncate_keep_each_row_as_it_was_under_the_writers_xid(
    notifications, raw_conn
):
    insert = committed(
        raw_conn,
        f"INSERT INTO {CUSTOM_PK} (name, description) VALUES ('a', 'A'), ('b', 'B'), ('c', NULL)",
    )
    update = committed(
        raw_conn, f"UPDATE {CUSTOM_PK} SET description = 'new' WHERE name IN ('a', 'c')"
    )
    delete = committed(raw_conn, f"DELETE FROM {CUSTOM_PK} WHERE name = 'b'")
    truncate = committed(raw_conn, f"TRUNCATE {CUSTOM_PK}")
    assert kept(raw_conn, insert) == []  # an INSERT has no old rows
    assert sorted(kept(raw_conn, update), key=lambda row: row[1]["name"]) == [
        (CUSTOM_PK, {"name": "a", "description": "A"}),
        (CUSTOM_PK, {"name": "c", "description": None}),
    ]
    assert kept(raw_conn, delete) == [(CUSTOM_PK, {"name": "b", "description": "B"})]
    assert sorted(kept(raw_conn, truncate), key=lambda row: row[1]["name"]) == [
        (CUSTOM_PK, {"name": "a", "description": "new"}),
        (CUSTOM_PK, {"name": "c", "description": "new"}),
    ]
    changes = [(c.op, c.pks and set(c.pks), c.xid) for c in notifications.drain()]
    assert changes == [
        ("I", {"a", "b", "c"}, insert),
        ("U", {"a", "c"}, update),
        ("D", {"b"}, delete),
        ("T", None, truncate),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_100_row_update_carries_the_xid_of_its_old_rows(notifications, raw_conn):
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"u{i}", first_name="before") for i in range(100)
    )
    notifications.drain()
    xid = committed(raw_conn, "UPDATE auth_user SET first_name = 'after'")
    images = kept(raw_conn, xid)
    assert len(images) == 100
    assert {table for table, _ in images} == {USER}
    assert {image["first_name"] for _, image in images} == {"before"}
    assert {image["id"] for _, image in images} == {u.pk for u in users}
    changes = notifications.drain()
    assert sorted(pk_list(changes, USER)) == sorted(u.pk for u in users)
    assert {c.xid for c in changes} == {xid}


@pytest.mark.django_db(transaction=True)
def test_orm_writes_in_savepoints_carry_the_top_level_transaction_and_rollbacks_keep_nothing(
    notifications, raw_conn
):
    user = get_user_model().objects.create(username="saved")
    notifications.drain()
    with transaction.atomic():
        with transaction.atomic():  # a savepoint: the old row is the whole transaction's
            user.first_name = "changed"
            user.save()
        xid = current_xid()
    assert [image["first_name"] for _, image in kept(raw_conn, xid)] == [""]
    assert [(c.op, c.pks, c.xid) for c in notifications.drain()] == [("U", (user.pk,), xid)]
    with pytest.raises(RuntimeError), transaction.atomic():
        user.delete()
        undone = current_xid()
        raise RuntimeError("roll back")
    assert kept(raw_conn, undone) == []
    assert notifications.drain() == []


@pytest.mark.django_db(transaction=True)
def test_a_table_without_old_rows_keeps_none_and_names_no_transaction(notifications, raw_conn):
    item = Item.objects.create(name="a")
    written = [
        committed(raw_conn, ("UPDATE testapp_item SET value = 1 WHERE id = %s", [item.pk])),
        committed(raw_conn, "DELETE FROM testapp_item"),
        committed(raw_conn, "INSERT INTO testapp_item (name, value, tags) VALUES ('b', 0, '{}')"),
        committed(raw_conn, "TRUNCATE testapp_item"),
    ]
    assert all(kept(raw_conn, xid) == [] for xid in written)
    changes = notifications.drain()
    assert [c.op for c in changes] == ["I", "U", "D", "I", "T"]
    assert {c.xid for c in changes} == {None}
    assert not any('"x"' in p for p in notifications.history if f'"t":"{ITEM}"' in p)


#: A table installed by the test itself: a text pk for payloads at the byte limit, a name
#: that holds what ``sql._frame`` splits the header on, and a column named like the alias
#: the trigger gives the old rows.
SCRATCH = 'pgobserve scratch "x":0'


@pytest.fixture
def scratch_table(raw_conn) -> Iterator[str]:
    table = Identifier(SCRATCH)
    spec = sql.TableSpec(SCRATCH, "k", old_rows=True)
    with raw_conn.transaction():
        raw_conn.execute(SQL("CREATE TABLE {} (k text PRIMARY KEY, r int)").format(table))
        for statement in sql.render_install(spec):
            raw_conn.execute(statement)
    yield SCRATCH
    with raw_conn.transaction():
        for statement in sql.render_drop(spec):
            raw_conn.execute(statement)
        raw_conn.execute(SQL("DROP TABLE {}").format(table))
        raw_conn.execute(f"DELETE FROM {OLD_ROWS_TABLE} WHERE tbl = %s", [SCRATCH])


@pytest.mark.django_db(transaction=True)
def test_payloads_at_the_byte_limit_match_payload_encode(notifications, raw_conn, scratch_table):
    """The trigger and ``payload.encode`` keep the same room for the widest transaction id:
    a pk exactly at the budget fits, one byte more is "pk": null, whatever the id."""
    widest = sql.payload_header(SCRATCH, "I", payload.MAX_XID)
    budget = sql.PAYLOAD_LIMIT - len(widest.encode()) - len("]}")
    exact, over = "e" * (budget - 2), "o" * (budget - 1)
    insert = SQL("INSERT INTO {} (k) VALUES (%s)").format(Identifier(SCRATCH))
    insert_many = SQL("INSERT INTO {} (k) SELECT unnest(%s::text[])")
    sent = {pk: committed(raw_conn, (insert, [pk])) for pk in (exact, over)}
    changes = notifications.drain()
    assert [(c.pks, c.xid) for c in changes] == [((exact,), sent[exact]), (None, sent[over])]
    for pk, xid in sent.items():
        (expected,) = payload.encode(SCRATCH, "I", [pk], xid)
        assert expected in notifications.history
    many = [f"k{i}" + "é" * (i % 50) for i in range(3000)]
    notifications.history.clear()
    xid = committed(raw_conn, (insert_many.format(Identifier(SCRATCH)), [many]))
    changes = notifications.drain()
    assert len(changes) > 1 and {c.xid for c in changes} == {xid}
    assert sorted(pk_list(changes, SCRATCH)) == sorted(many)
    # Many pks per payload, each chunk leaving room for a 20-digit id, as encode's do.
    room = len(str(payload.MAX_XID)) - len(str(xid))
    sent = [p for p in notifications.history if payload.decode(p).table == SCRATCH]
    assert max(len(p.encode()) for p in sent) <= sql.PAYLOAD_LIMIT - room
    assert max(len(p.encode()) for p in payload.encode(SCRATCH, "I", many, xid)) <= (
        sql.PAYLOAD_LIMIT - room
    )


@pytest.mark.django_db(transaction=True)
def test_a_column_named_like_the_alias_of_the_old_rows_is_kept_whole(
    notifications, raw_conn, scratch_table
):
    """``to_jsonb(r)`` would be the column ``r`` (null here: the writer would fail on the
    NOT NULL image); the image is the whole row."""
    table = Identifier(SCRATCH)
    committed(raw_conn, SQL("INSERT INTO {} (k) VALUES ('a'), ('b')").format(table))
    xid = committed(raw_conn, SQL("UPDATE {} SET r = 1").format(table))
    assert sorted(image["k"] for _, image in kept(raw_conn, xid)) == ["a", "b"]
    assert {tuple(sorted(image)) for _, image in kept(raw_conn, xid)} == {("k", "r")}
    assert pks_of(notifications.drain(), SCRATCH, "U") == {"a", "b"}


@pytest.mark.django_db
def test_an_unknown_old_rows_label_fails_loudly_with_a_suggestion():
    with override_settings(PGOBSERVE={**settings.PGOBSERVE, "OLD_ROWS": ["testapp.Iten"]}):
        message = r'PGOBSERVE\["OLD_ROWS"\] names "testapp.Iten".*did you mean "testapp.Item"'
        with pytest.raises(ImproperlyConfigured, match=message):
            registry.old_rows_models()
        with pytest.raises(ImproperlyConfigured, match=message):
            call_command("pgobserve", "status")


# registry.load_consumers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tests.no_such_module.application", "No module named 'tests.no_such_module'"),
        ("tests.settings.no_such_application", 'does not define a "no_such_application"'),
        ("application", "doesn't look like a module path"),
    ],
)
def test_a_bad_asgi_application_says_which_setting_and_why(settings, path, reason):
    settings.ASGI_APPLICATION = path
    message = f"could not import ASGI_APPLICATION '{path}' to find the model observers"
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)) as failure:
        registry.load_consumers()
    assert reason in str(failure.value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        call_command("pgobserve", "status")  # before anything else: no database needed


@pytest.mark.parametrize("unset", ["deleted", None, ""])
def test_without_asgi_application_loading_consumers_does_nothing(settings, unset):
    if unset == "deleted":
        del settings.ASGI_APPLICATION
    else:
        settings.ASGI_APPLICATION = unset
    assert registry.load_consumers() is None


def test_an_importable_asgi_application_is_imported(settings):
    settings.ASGI_APPLICATION = "tests.testapp.models.Item"
    assert registry.load_consumers() is None
