"""The generated triggers on a real PostgreSQL: exactly which pks every kind of write notifies."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection, transaction
from psycopg.sql import SQL, Identifier

from pgobserve import payload, sql
from tests.fix_listen import pk_list, pks_of
from tests.testapp.models import Item, TextItem, UUIDItem, Weird

ITEM = "testapp_item"
WEIRD = Weird._meta.db_table

pytestmark = pytest.mark.django_db(transaction=True)


def test_orm_save_insert_and_update(notifications):
    item = Item.objects.create(name="a")
    changes = notifications.drain()
    assert [(c.table, c.op, c.pks) for c in changes] == [(ITEM, "I", (item.pk,))]
    item.name = "b"
    item.save()
    assert [(c.table, c.op, c.pks) for c in notifications.drain()] == [(ITEM, "U", (item.pk,))]


def test_delete(notifications):
    keep, gone = Item.objects.create(name="keep"), Item.objects.create(name="gone")
    notifications.drain()
    gone_pk = gone.pk
    gone.delete()
    assert [(c.op, c.pks) for c in notifications.drain()] == [("D", (gone_pk,))]
    assert Item.objects.filter(pk=keep.pk).exists()


def test_queryset_update_of_10000_rows_is_a_handful_of_notifications(notifications):
    Item.objects.bulk_create(Item(name=f"n{i}") for i in range(10_000))
    created = notifications.drain()
    ids = set(Item.objects.values_list("pk", flat=True))
    assert pks_of(created, ITEM, "I") == ids
    assert Item.objects.update(value=7) == 10_000
    changes = notifications.drain()
    assert {c.op for c in changes} == {"U"}
    assert sorted(pk_list(changes, ITEM)) == sorted(ids)  # every pk, once
    assert 1 <= len(changes) <= 20


def test_bulk_create(notifications):
    items = Item.objects.bulk_create([Item(name="x"), Item(name="y"), Item(name="z")])
    changes = notifications.drain()
    assert [(c.op, sorted(c.pks)) for c in changes] == [("I", sorted(i.pk for i in items))]


def test_bulk_update_notifies_only_changed_rows(notifications):
    items = Item.objects.bulk_create([Item(name="x"), Item(name="y"), Item(name="z")])
    notifications.drain()
    items[0].value, items[2].value = 5, 6
    Item.objects.bulk_update(items, ["value"])
    changes = notifications.drain()
    assert sorted(pk_list(changes, ITEM)) == sorted([items[0].pk, items[2].pk])
    assert {c.op for c in changes} == {"U"}


def test_queryset_delete(notifications):
    items = Item.objects.bulk_create(Item(name=str(i), value=i % 2) for i in range(50))
    notifications.drain()
    Item.objects.filter(value=1).delete()
    changes = notifications.drain()
    assert pks_of(changes, ITEM, "D") == {i.pk for i in items if i.value == 1}
    assert {c.op for c in changes} == {"D"}


def test_raw_sql_from_a_connection_outside_django(notifications, raw_conn):
    ids = [
        r[0]
        for r in raw_conn.execute(
            "INSERT INTO testapp_item (name, value, tags) SELECT 'raw', g, '{}' "
            "FROM generate_series(1, 5) g RETURNING id"
        ).fetchall()
    ]
    raw_conn.execute("UPDATE testapp_item SET value = value + 1 WHERE value > 3")
    raw_conn.execute("DELETE FROM testapp_item WHERE value = 1")
    changes = notifications.drain()
    assert [(c.op, set(c.pks)) for c in changes] == [
        ("I", set(ids)),
        ("U", set(ids[3:])),
        ("D", {ids[0]}),
    ]


def test_truncate_notifies_the_whole_table(notifications, raw_conn):
    Item.objects.create(name="a")
    notifications.drain()
    raw_conn.execute("TRUNCATE testapp_item")
    changes = notifications.drain()
    assert [(c.table, c.op, c.pks) for c in changes] == [(ITEM, "T", None)]
    assert payload.merge(changes)[ITEM].truncated


def test_rolled_back_transaction_sends_nothing(notifications):
    with pytest.raises(RuntimeError), transaction.atomic():
        Item.objects.create(name="never")
        Item.objects.update(value=3)
        raise RuntimeError("roll back")
    assert notifications.drain() == []
    assert not Item.objects.exists()


def test_rolled_back_savepoint_keeps_only_the_committed_part(notifications):
    with transaction.atomic():
        kept = Item.objects.create(name="kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            Item.objects.create(name="undone")
            raise RuntimeError
    # The INSERT of the savepoint was undone with its NOTIFY: only "kept" is reported.
    assert [(c.op, c.pks) for c in notifications.drain()] == [("I", (kept.pk,))]


def test_noop_update_sends_nothing(notifications, raw_conn):
    Item.objects.bulk_create(Item(name=str(i), doc='{"a": [1, 2]}') for i in range(20))
    notifications.drain()
    assert Item.objects.update(value=0) == 20  # value was already 0
    raw_conn.execute("UPDATE testapp_item SET doc = doc, tags = tags, name = name")
    assert notifications.drain() == []


def test_update_of_a_json_column_is_seen(notifications, raw_conn):
    """json has no "=" operator; the trigger compares row images, so this must still work."""
    a, b = Item.objects.create(name="a", doc='{"k": 1}'), Item.objects.create(name="b", doc="[]")
    notifications.drain()
    # Same json value written with different whitespace is a change of the stored text.
    raw_conn.execute("UPDATE testapp_item SET doc = '{\"k\": 2}' WHERE id = %s", [a.pk])
    raw_conn.execute("UPDATE testapp_item SET doc = doc WHERE id = %s", [b.pk])
    assert [(c.op, c.pks) for c in notifications.drain()] == [("U", (a.pk,))]


def test_update_of_a_pk_reports_both_pks(notifications, raw_conn):
    item = Item.objects.create(name="a")
    other = Item.objects.create(name="b")
    notifications.drain()
    raw_conn.execute("UPDATE testapp_item SET id = id + 1000 WHERE id = %s", [item.pk])
    changes = notifications.drain()
    assert [c.op for c in changes] == ["U"]
    assert set(changes[0].pks) == {item.pk, item.pk + 1000}
    # Two pks moved in one statement, one other column changed: every old and new pk.
    raw_conn.execute(
        "UPDATE testapp_item SET id = id + 5000 WHERE id IN (%s, %s)", [item.pk + 1000, other.pk]
    )
    raw_conn.execute("UPDATE testapp_item SET name = 'c' WHERE id = %s", [other.pk + 5000])
    changes = notifications.drain()
    assert [set(c.pks) for c in changes] == [
        {item.pk + 1000, item.pk + 6000, other.pk, other.pk + 5000},
        {other.pk + 5000},
    ]


def test_uuid_pks(notifications):
    rows = UUIDItem.objects.bulk_create(UUIDItem(name=str(i)) for i in range(300))
    changes = notifications.drain()
    assert {uuid.UUID(pk) for pk in pks_of(changes, "testapp_uuiditem", "I")} == {
        r.pk for r in rows
    }
    UUIDItem.objects.filter(pk=rows[0].pk).update(name="changed")
    assert [(c.op, c.pks) for c in notifications.drain()] == [("U", (str(rows[0].pk),))]


def test_text_pks_with_quotes_and_backslashes(notifications):
    keys = ["plain", 'it\'s "quoted"', "back\\slash", "new\nline", "ünï©ødé ✓", "", "a,b]}"]
    TextItem.objects.bulk_create(TextItem(key=k) for k in keys)
    assert pks_of(notifications.drain(), "testapp_textitem", "I") == set(keys)
    TextItem.objects.filter(key__in=keys[1:3]).update(value=1)
    assert pks_of(notifications.drain(), "testapp_textitem", "U") == set(keys[1:3])


def test_the_weird_table(notifications, raw_conn):
    table = Identifier(WEIRD)
    pk, label = Identifier(Weird._meta.pk.column), Identifier("La bel'\"")
    (row,) = raw_conn.execute(
        SQL("INSERT INTO {} ({}) VALUES ('x') RETURNING {}").format(table, label, pk)
    ).fetchone()
    raw_conn.execute(SQL("UPDATE {} SET {} = 'y'").format(table, label))
    raw_conn.execute(SQL("DELETE FROM {} WHERE {} = %s").format(table, pk), [row])
    raw_conn.execute(SQL("TRUNCATE {}").format(table))
    assert [(c.table, c.op, c.pks) for c in notifications.drain()] == [
        (WEIRD, "I", (row,)),
        (WEIRD, "U", (row,)),
        (WEIRD, "D", (row,)),
        (WEIRD, "T", None),
    ]
    # The name was quoted, never executed as SQL: the table is intact.
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.quote_ident(WEIRD)])
        assert cursor.fetchone()[0]


def test_a_pk_that_nearly_fills_a_payload_gets_a_payload_of_its_own(notifications):
    wide = "q" * 7_950
    TextItem.objects.bulk_create([TextItem(key="a"), TextItem(key=wide), TextItem(key="b")])
    changes = notifications.drain()
    assert pks_of(changes, "testapp_textitem", "I") == {"a", wide, "b"}
    assert any(c.pks == (wide,) for c in changes)
    assert all(len(p.encode()) <= 7999 for p in payload.encode("testapp_textitem", "I", [wide]))


@pytest.mark.parametrize("width", [7_999, 20_000])
def test_a_pk_too_wide_for_any_payload_degrades_to_null_without_error(notifications, width):
    wide = "w" * width  # repetitive, so the btree entry is compressed under its size limit
    TextItem.objects.create(key=wide)  # the writer gets no error
    TextItem.objects.create(key="small")
    changes = notifications.drain()
    assert [(c.op, c.pks) for c in changes] == [("I", None), ("I", ("small",))]
    assert TextItem.objects.filter(key=wide).exists()


def test_quotes_in_a_wide_pk_count_as_the_bytes_they_escape_to(notifications):
    # 3,980 quotes are 7,960 bytes of JSON ("\"" each) plus 2 for the string's own quotes.
    quoted = '"' * 3_975  # 7,952 bytes as JSON: fits
    too_wide = '"' * 3_990  # 7,982 bytes as JSON: over the budget once the header is counted
    TextItem.objects.create(key=quoted)
    TextItem.objects.create(key=too_wide)
    changes = notifications.drain()
    assert [(c.op, c.pks) for c in changes] == [("I", (quoted,)), ("I", None)]


def test_bigint_pks_near_the_limit_are_chunked(notifications, raw_conn):
    raw_conn.execute(
        "INSERT INTO testapp_item (id, name, value, tags) "
        "SELECT 9223372036854775807 - g, 'big', 0, '{}' FROM generate_series(0, 2999) g"
    )
    changes = notifications.drain()
    assert pks_of(changes, ITEM) == {9223372036854775807 - g for g in range(3000)}
    assert len(changes) >= 3000 * 20 // 7999 + 1
    assert all(len(json.dumps(list(c.pks), separators=(",", ":"))) < 7999 for c in changes)


def test_a_pk_exactly_at_the_budget_fits_and_one_byte_more_does_not(notifications):
    header = sql.payload_header("testapp_textitem", "I")
    budget = sql.PAYLOAD_LIMIT - len(header) - len("]}")
    exact, over = "e" * (budget - 2), "o" * (budget - 1)  # JSON adds two quotes
    TextItem.objects.create(key=exact)
    TextItem.objects.create(key=over)
    changes = notifications.drain()
    assert [(c.op, c.pks) for c in changes] == [("I", (exact,)), ("I", None)]
    assert sql.PAYLOAD_LIMIT in {len(p.encode()) for p in notifications.history}


def test_non_ascii_pks_are_counted_in_utf8_bytes_like_payload_encode(notifications):
    fits = "é" * 3_970  # 7,942 bytes of JSON: one payload
    too_wide = "é" * 4_000  # 8,002 bytes: pk null
    TextItem.objects.create(key=fits)
    TextItem.objects.create(key=too_wide)
    changes = notifications.drain()
    assert [c.pks for c in changes] == [(fits,), None]
    assert [payload.decode(p).pks for p in payload.encode("testapp_textitem", "I", [fits])] == [
        (fits,)
    ]
    assert payload.decode(next(payload.encode("t", "I", [too_wide]))).pks is None


def test_large_update_sends_every_touched_pk_once_and_both_pks_of_moved_rows(
    notifications, raw_conn, settings
):
    """Above UPDATE_DIFF_MAX_ROWS the trigger skips the row diff: more, never less."""
    n = 10_500
    raw_conn.execute(
        "INSERT INTO testapp_item (id, name, value, tags) "
        "SELECT g, 'r', 0, '{}' FROM generate_series(1, %s) g",
        [n],
    )
    notifications.drain()
    raw_conn.execute("UPDATE testapp_item SET value = 1")
    assert sorted(pk_list(notifications.drain(), ITEM)) == list(range(1, n + 1))
    raw_conn.execute("UPDATE testapp_item SET id = id + 100000")
    moved = pks_of(notifications.drain(), ITEM, "U")
    assert moved == set(range(1, n + 1)) | set(range(100_001, 100_001 + n))


def test_session_keys_are_never_sent_only_their_md5(notifications):
    """Sessions are observed to close sockets at logout; their pk is a secret."""
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store["k"] = "v"
    store.create()
    key = store.session_key
    store.delete()
    changes = [c for c in notifications.drain() if c.table == "django_session"]
    assert [(c.op, c.pks) for c in changes] == [
        ("I", (sql.pk_digest(key),)),
        ("D", (sql.pk_digest(key),)),
    ]
    assert all(key not in json.dumps(c.pks) for c in changes)
