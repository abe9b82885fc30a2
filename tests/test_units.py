"""Pure functions, no database: SQL rendering, payloads, group names, message grouping."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from pgobserve import groups, payload, sql
from pgobserve.listener import table_messages
from pgobserve.payload import Change, PayloadError, TableChanges

WEIRD = 'we"ird; drop table x; --'


# sql.py ------------------------------------------------------------------------------------


def test_identifiers_are_quoted_with_doubled_quotes():
    assert sql.quote_ident(WEIRD) == '"we""ird; drop table x; --"'
    assert sql.quote_literal("it's") == "'it''s'"
    with pytest.raises(ValueError):
        sql.quote_ident("a\x00b")


def test_weird_names_never_appear_unquoted():
    spec = sql.TableSpec(WEIRD, 'i"d', "chan'nel")
    text = "\n".join(sql.render_install(spec) + sql.render_drop(spec))
    # Every occurrence of the table name is inside a quoted identifier or a JSON literal.
    unquoted = text.replace('"we""ird; drop table x; --"', "").replace(
        '"t":"we\\"ird; drop table x; --"', ""
    )
    assert "drop table x" not in unquoted
    assert '"i""d"' in text and "'chan''nel'" in text


@pytest.mark.parametrize("table", ["t", "x" * 63, WEIRD, "ÄÖÜ" * 21, "-", "Mixed Case"])
def test_function_names_are_short_distinct_and_safe(table):
    name = sql.function_name(table)
    assert len(name.encode()) < 64
    assert re.fullmatch(r"pgobserve_[a-z0-9_]+", name)
    assert name != sql.function_name("2" + table)
    # PostgreSQL cuts a name to 63 bytes: names equal up to there are one table, one function.
    longer = table + "2"
    same_table = sql.stored_name(longer) == sql.stored_name(table)
    assert (sql.function_name(longer) == name) == same_table


def test_signature_changes_with_every_part_of_the_spec():
    base = sql.TableSpec("app_item", "id", "pgobserve")
    variants = [
        base,
        sql.TableSpec("app_item2", "id", "pgobserve"),
        sql.TableSpec("app_item", "uid", "pgobserve"),
        sql.TableSpec("app_item", "id", "other"),
    ]
    signatures = {sql.signature(s) for s in variants}
    assert len(signatures) == len(variants)
    assert sql.signature(base) == sql.signature(sql.TableSpec("app_item", "id", "pgobserve"))
    assert sql.signature(base).startswith(f"pgobserve:v{sql.TEMPLATE_VERSION}:")


def test_dollar_quote_tag_never_occurs_in_the_body():
    spec = sql.TableSpec("has $pgobserve$ inside", "id")
    function = sql.render_function(spec)
    tag = re.search(r"AS (\$\w+\$)", function).group(1)
    assert tag != "$pgobserve$"
    assert function.count(tag) == 2


def test_install_comments_every_object_with_the_signature():
    spec = sql.TableSpec("app_item", "id")
    statements = sql.render_install(spec)
    comments = [s for s in statements if s.startswith("COMMENT ON")]
    assert len(comments) == 1 + len(sql.TRIGGER_NAMES)
    assert all(s.endswith(f"'{sql.signature(spec)}'") for s in comments)
    assert sum("CREATE TRIGGER" in s for s in statements) == 4
    assert all("FOR EACH STATEMENT" in s for s in statements if "CREATE TRIGGER" in s)


# payload.py --------------------------------------------------------------------------------


def test_decode_round_trip_and_rejects():
    (text,) = payload.encode("t", "U", [1, "a", 2.5])
    assert payload.decode(text) == Change("t", "U", (1, "a", 2.5))
    assert payload.decode('{"v":1,"t":"t","op":"T","pk":null}') == Change("t", "T", None)
    for bad in ["nope", "[]", '{"v":2,"t":"t","op":"U","pk":[]}', '{"v":1,"t":"t","op":"X"}']:
        with pytest.raises(PayloadError):
            payload.decode(bad)


def test_merge_unions_pks_per_table_and_remembers_truncate():
    merged = payload.merge(
        [
            Change("a", "I", (1, 2)),
            Change("a", "U", (2, 3)),
            Change("b", "T", None),
            Change("b", "I", (9,)),
            Change("c", "U", None),
        ]
    )
    assert merged["a"] == TableChanges(pks={1, 2, 3})
    assert merged["b"].everything and merged["b"].truncated
    assert merged["c"].everything and not merged["c"].truncated


PKS = {
    "int": list(range(1, 5000)),
    "bigint": [2**63 - 1 - i for i in range(2000)],
    "uuid": [str(uuid.UUID(int=i)) for i in range(1000)],
    "text": [f'k"{i}\\' + "é" * (i % 7) for i in range(2000)],
}


@pytest.mark.parametrize("kind", PKS)
def test_encode_chunks_under_the_limit_and_loses_nothing(kind):
    pks = PKS[kind]
    payloads = list(payload.encode("app_item", "U", pks))
    assert len(payloads) > 1
    assert all(len(p.encode()) <= sql.PAYLOAD_LIMIT for p in payloads)
    decoded = [pk for p in payloads for pk in payload.decode(p).pks]
    assert decoded == pks
    # Greedy: every payload but the last is full enough that the next pk would not fit.
    for p, following in zip(payloads, payloads[1:], strict=False):
        next_pk = json.dumps(payload.decode(following).pks[0], ensure_ascii=False)
        assert len(p.encode()) + 1 + len(next_pk.encode()) > sql.PAYLOAD_LIMIT


def test_encode_a_pk_exactly_at_the_budget_and_one_byte_over():
    header = sql.payload_header("t", "I")
    budget = sql.PAYLOAD_LIMIT - len(header) - 2
    (exact,) = payload.encode("t", "I", ["x" * (budget - 2)])
    assert len(exact.encode()) == sql.PAYLOAD_LIMIT
    assert list(payload.encode("t", "I", ["x" * (budget - 1)])) == [
        '{"v":1,"t":"t","op":"I","pk":null}'
    ]


def test_encode_counts_bytes_not_characters():
    pk = "é" * 4000  # 4,000 characters, 8,000 bytes
    assert payload.decode(next(payload.encode("t", "I", [pk]))).pks is None


# groups.py ---------------------------------------------------------------------------------

LEGAL = re.compile(r"^[a-zA-Z\d\-_.]{1,99}$")  # channels' group name rule


@pytest.mark.parametrize("table", ["app_item", WEIRD, "x" * 300, "ünï", ""])
def test_group_names_are_legal_for_any_table(table):
    names = [groups.table_group(table)] + [groups.shard_group(table, s) for s in range(1000)]
    assert all(LEGAL.match(n) for n in names)
    assert len(set(names)) == len(names)
    assert groups.table_group(table) != groups.table_group(table + "x")
    assert LEGAL.match(groups.RESYNC_GROUP)


def test_shards_agree_between_json_values_and_python_values():
    value = uuid.uuid4()
    for python_pk, json_pk in [
        (value, str(value)),
        (42, 42),
        (2**63 - 1, 2**63 - 1),
        ("a'b", "a'b"),
    ]:
        decoded = json.loads(json.dumps(json_pk))
        assert groups.shard_of(python_pk, 64) == groups.shard_of(decoded, 64)
        assert groups.group_for_pk("t", python_pk, 64) == groups.shard_group(
            "t", groups.shard_of(decoded, 64)
        )


def test_shards_spread_pks():
    counts = [0] * 64
    for pk in range(64_000):
        counts[groups.shard_of(pk, 64)] += 1
    assert min(counts) > 700 and max(counts) < 1300


# listener.table_messages -------------------------------------------------------------------


def test_100k_pks_make_a_few_hundred_messages_with_each_shard_getting_its_own_pks():
    pks = set(range(100_000))
    messages = table_messages("t", TableChanges(pks=pks), shards=64, max_pks=5000)
    assert len(messages) <= 100_000 // 5000 + 64
    table = [m for g, m in messages if g == groups.table_group("t")]
    assert set().union(*(m["pks"] for m in table)) == pks
    assert all(len(m["pks"]) <= 5000 for _, m in messages)
    shard_pks: list = []
    for group, message in messages:
        if group == groups.table_group("t"):
            continue
        shard = int(group.rsplit(".s", 1)[1])
        assert group == groups.shard_group("t", shard)
        assert all(groups.shard_of(pk, 64) == shard for pk in message["pks"])
        shard_pks += message["pks"]
    assert sorted(shard_pks) == sorted(pks)  # every pk in exactly one shard message


def test_one_changed_row_wakes_one_shard():
    messages = table_messages("t", TableChanges(pks={7}), shards=64, max_pks=5000)
    assert [g for g, _ in messages] == [groups.table_group("t"), groups.group_for_pk("t", 7, 64)]


def test_everything_goes_to_the_table_group_and_every_shard():
    changes = TableChanges(pks={1}, everything=True, truncated=True)
    messages = table_messages("t", changes, shards=8, max_pks=5000)
    assert {g for g, _ in messages} == {groups.table_group("t")} | {
        groups.shard_group("t", s) for s in range(8)
    }
    assert all(m["pks"] is None and m["truncated"] for _, m in messages)
    assert all(m["type"] == "pgobserve.change" and m["table"] == "t" for _, m in messages)


def test_the_example_watcher_refuses_an_http_url_without_a_traceback():
    import subprocess
    import sys
    from pathlib import Path

    watcher = Path(__file__).resolve().parents[1] / "example" / "watch.py"
    done = subprocess.run(
        [sys.executable, str(watcher), "http://127.0.0.1:8000/ws/tasks/", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "must start with ws:// or wss://" in done.stderr
    assert "Traceback" not in done.stderr
