"""Conversations storage on every engine: objects, items and their pages, owner scoping, and the
atomic append of a completed response's items (``put(..., conversation_id=…)``), including concurrent
appends, 10,000 items and ``kill -9`` in the middle of appending."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from server.store import ConversationNotFound, StoreRefused, open_store
from tests.server.test_store import ROOT, all_engines, durable_engines, engines, ids, response, user

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def conv(cid: str, **metadata: str) -> dict:
    return {"id": cid, "object": "conversation", "created_at": 1_700_000_000, "metadata": metadata}


@all_engines
async def test_create_get_update_delete(store: Any) -> None:
    made = await store.create_conversation(conv("conv_1", topic="x"), [user("hello", "msg_h"), user("no id")], owner="o")
    assert made[0]["id"] == "msg_h" and made[1]["id"].startswith("msg_")
    assert await store.get_conversation("conv_1", owner="o") == {
        "id": "conv_1", "object": "conversation", "created_at": 1_700_000_000, "metadata": {"topic": "x"},
    }  # fmt: skip
    assert ids(await store.all_conversation_items("conv_1", owner="o")) == ids(made)
    updated = await store.update_conversation("conv_1", {"topic": "y", "k": "v"}, owner="o")
    assert updated["metadata"] == {"topic": "y", "k": "v"}
    assert (await store.get_conversation("conv_1", owner="o"))["metadata"] == {"topic": "y", "k": "v"}
    assert await store.delete_conversation("conv_1", owner="o") is True
    assert await store.get_conversation("conv_1", owner="o") is None
    assert await store.all_conversation_items("conv_1", owner="o") is None
    assert await store.delete_conversation("conv_1", owner="o") is False


@all_engines
async def test_conversations_are_visible_only_to_their_owner(store: Any) -> None:
    await store.create_conversation(conv("conv_o"), [user("a", "msg_a")], owner="alice")
    assert await store.get_conversation("conv_o", owner="bob") is None
    assert await store.get_conversation("conv_o", owner=None) is None
    assert await store.update_conversation("conv_o", {"x": "1"}, owner="bob") is None
    assert await store.delete_conversation("conv_o", owner="bob") is False
    assert await store.add_conversation_items("conv_o", [user("b")], owner="bob") is None
    assert await store.conversation_items("conv_o", owner="bob") is None
    assert await store.all_conversation_items("conv_o", owner="bob") is None
    assert await store.get_conversation_item("conv_o", "msg_a", owner="bob") is None
    assert await store.delete_conversation_item("conv_o", "msg_a", owner="bob") is False
    with pytest.raises(ConversationNotFound):
        await store.put(response("resp_b"), [user("q")], owner="bob", conversation_id="conv_o")
    assert await store.get("resp_b", owner="bob") is None
    assert ids(await store.all_conversation_items("conv_o", owner="alice")) == ["msg_a"]


@all_engines
async def test_items_pages_in_both_orders(store: Any) -> None:
    items = [user(f"t{n}", f"msg_{n}") for n in range(7)]
    await store.create_conversation(conv("conv_p"), items[:3], owner=None)
    added = await store.add_conversation_items("conv_p", items[3:], owner=None)
    assert ids(added) == ["msg_3", "msg_4", "msg_5", "msg_6"]

    first = await store.conversation_items("conv_p", owner=None, limit=3)  # default order: desc
    assert ids(first["data"]) == ["msg_6", "msg_5", "msg_4"]
    assert (first["first_id"], first["last_id"], first["has_more"]) == ("msg_6", "msg_4", True)
    second = await store.conversation_items("conv_p", owner=None, limit=3, after=first["last_id"])
    assert ids(second["data"]) == ["msg_3", "msg_2", "msg_1"] and second["has_more"] is True
    last = await store.conversation_items("conv_p", owner=None, limit=3, after="msg_1")
    assert ids(last["data"]) == ["msg_0"] and last["has_more"] is False

    asc = await store.conversation_items("conv_p", owner=None, limit=4, order="asc")
    assert ids(asc["data"]) == ["msg_0", "msg_1", "msg_2", "msg_3"] and asc["has_more"] is True
    rest = await store.conversation_items("conv_p", owner=None, limit=4, order="asc", after="msg_3")
    assert ids(rest["data"]) == ["msg_4", "msg_5", "msg_6"] and rest["has_more"] is False
    exact = await store.conversation_items("conv_p", owner=None, limit=7, order="asc")
    assert len(exact["data"]) == 7 and exact["has_more"] is False

    unknown = await store.conversation_items("conv_p", owner=None, after="msg_nope")
    assert unknown["data"] == [] and unknown["first_id"] is None and unknown["has_more"] is False
    with pytest.raises(ValueError):
        await store.conversation_items("conv_p", owner=None, order="sideways")


@all_engines
async def test_get_and_delete_one_item(store: Any) -> None:
    await store.create_conversation(conv("conv_i"), [user("a", "msg_a"), user("b", "msg_b"), user("c", "msg_c")], owner=None)
    assert (await store.get_conversation_item("conv_i", "msg_b", owner=None))["content"][0]["text"] == "b"
    assert await store.get_conversation_item("conv_i", "msg_zz", owner=None) is None
    assert await store.delete_conversation_item("conv_i", "msg_b", owner=None) is True
    assert await store.delete_conversation_item("conv_i", "msg_b", owner=None) is False
    assert await store.get_conversation_item("conv_i", "msg_b", owner=None) is None
    assert ids(await store.all_conversation_items("conv_i", owner=None)) == ["msg_a", "msg_c"]
    page = await store.conversation_items("conv_i", owner=None, order="asc", after="msg_a")
    assert ids(page["data"]) == ["msg_c"]
    await store.add_conversation_items("conv_i", [user("d", "msg_d")], owner=None)  # after a gap
    assert ids(await store.all_conversation_items("conv_i", owner=None)) == ["msg_a", "msg_c", "msg_d"]


@all_engines
async def test_put_with_a_conversation_appends_input_then_output(store: Any) -> None:
    await store.create_conversation(conv("conv_r"), [user("earlier", "msg_e")], owner="o")
    await store.put(response("resp_1"), [user("q1", "msg_q1")], owner="o", conversation_id="conv_r")
    await store.put(response("resp_2"), [user("q2")], owner="o", conversation_id="conv_r")
    assert ids(await store.all_conversation_items("conv_r", owner="o")) == [
        "msg_e", "msg_q1", "msg_out_resp_1", "msg_2_in0", "msg_out_resp_2",
    ]  # fmt: skip
    assert (await store.get("resp_2", owner="o"))["id"] == "resp_2"
    # storing the same response again (a retried write) does not append it twice
    await store.put(response("resp_2"), [user("q2")], owner="o", conversation_id="conv_r")
    assert len(await store.all_conversation_items("conv_r", owner="o")) == 5


@all_engines
async def test_a_put_naming_a_missing_conversation_writes_nothing(store: Any) -> None:
    with pytest.raises(ConversationNotFound):
        await store.put(response("resp_x"), [user("q", "msg_x")], owner=None, conversation_id="conv_missing")
    assert await store.get("resp_x", owner=None) is None
    assert await store.get_item("msg_x", owner=None) is None


@all_engines
async def test_concurrent_appends_keep_completion_order_and_lose_nothing(store: Any) -> None:
    await store.create_conversation(conv("conv_c"), [], owner=None)
    await asyncio.gather(
        *(store.put(response(f"resp_{n}"), [user(f"q{n}", f"msg_q{n}")], owner=None, conversation_id="conv_c")
          for n in range(40))
    )  # fmt: skip
    got = ids(await store.all_conversation_items("conv_c", owner=None))
    assert got == [i for n in range(40) for i in (f"msg_q{n}", f"msg_out_resp_{n}")]


@engines("postgresql")
async def test_two_replicas_appending_to_one_conversation_lose_nothing(store_spec: str) -> None:
    a, b = open_store(store_spec), open_store(store_spec)
    await asyncio.gather(a.open(), b.open())
    try:
        await a.create_conversation(conv("conv_ab"), [], owner=None)
        await asyncio.gather(
            *(s.put(response(f"resp_{s is a}{n}"), [user("q", f"msg_{s is a}{n}")], owner=None, conversation_id="conv_ab")
              for n in range(30) for s in (a, b))
        )  # fmt: skip
        got = ids(await b.all_conversation_items("conv_ab", owner=None))
        assert len(got) == 120 and len(set(got)) == 120
        for n in range(30):  # each response's items are together, input first
            for side in (True, False):
                at = got.index(f"msg_{side}{n}")
                assert got[at + 1] == f"msg_out_resp_{side}{n}"
    finally:
        await asyncio.gather(a.close(), b.close())


@all_engines
async def test_a_conversation_of_10000_items_loads_whole_and_in_order(store: Any) -> None:
    await store.create_conversation(conv("conv_big"), [], owner=None)
    for start in range(0, 10_000, 1000):
        await store.add_conversation_items(
            "conv_big", [user(f"t{n}", f"msg_{n:05}") for n in range(start, start + 1000)], owner=None
        )
    items = await store.all_conversation_items("conv_big", owner=None)
    assert ids(items) == [f"msg_{n:05}" for n in range(10_000)]
    tail = await store.conversation_items("conv_big", owner=None, limit=100, after="msg_09899", order="asc")
    assert ids(tail["data"]) == [f"msg_{n:05}" for n in range(9900, 10_000)] and tail["has_more"] is False


@engines("sqlite")
async def test_sqlite_loads_a_conversation_through_its_index(store: Any) -> None:
    plan = await store._run(
        lambda: store._db().execute(
            "EXPLAIN QUERY PLAN SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY position",
            ("conv_x",),
        ).fetchall()
    )
    text = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX" in text and "TEMP B-TREE" not in text, text


@all_engines
async def test_conversation_inputs_are_checked(store: Any) -> None:
    with pytest.raises(StoreRefused) as info:
        await store.create_conversation(conv("conv_\x00"), [], owner=None)
    assert info.value.field == "id"
    with pytest.raises(StoreRefused) as info:
        await store.create_conversation(conv("conv_ok"), [user("q", "msg_" + "x" * 300)], owner=None)
    assert info.value.field == "items[0].id"
    await store.create_conversation(conv("conv_ok"), [], owner=None)
    with pytest.raises(StoreRefused):
        await store.update_conversation("conv_ok", "not an object", owner=None)  # type: ignore[arg-type]
    with pytest.raises(StoreRefused):
        await store.add_conversation_items("conv_ok", [{"type": "message", "content": "x", "id": "m\x00"}], owner=None)
    assert await store.all_conversation_items("conv_ok", owner=None) == []


# ---------------------------------------------------------------------------------- kill -9


APPENDER = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from server.store import open_store

async def main() -> None:
    store = open_store({spec!r})
    await store.open()
    await store.create_conversation({{"id": "conv_k", "metadata": {{}}}}, [], owner=None)
    n = 0
    while True:
        inputs = [{{"id": f"msg_{{n}}_{{k}}", "type": "message", "role": "user", "content": "x" * 200}}
                  for k in range(50)]
        body = {{"id": f"resp_{{n}}", "created_at": int(time.time()), "status": "completed",
                 "output": [{{"id": f"out_{{n}}", "type": "message", "role": "assistant", "content": []}}]}}
        await asyncio.gather(*(store.put({{**body, "id": f"resp_{{n}}_{{w}}",
                                           "output": [{{**body["output"][0], "id": f"out_{{n}}_{{w}}"}}]}},
                                         [{{**i, "id": i["id"] + f"_{{w}}"}} for i in inputs],
                                         owner=None, conversation_id="conv_k") for w in range(4)))
        n += 1
        print(n, flush=True)

asyncio.run(main())
"""


@durable_engines
async def test_kill_9_during_appends_leaves_nothing_half_appended(store_spec: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER.format(root=str(ROOT), spec=store_spec)], stdout=subprocess.PIPE, text=True
    )
    try:
        acknowledged = 0
        deadline = time.monotonic() + 60
        while acknowledged < 15 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            assert line, "the appender died"
            acknowledged = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # writes of round `acknowledged` are in flight
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    reopened = open_store(store_spec)
    await reopened.open()
    try:
        got = ids(await reopened.all_conversation_items("conv_k", owner=None))
        assert len(got) == len(set(got))
        assert len(got) % 51 == 0, f"{len(got)} items: a response was half appended"
        groups = [got[i : i + 51] for i in range(0, len(got), 51)]
        appended = set()
        for group in groups:  # each response's 50 inputs then its output, whole and together
            n, w = group[-1].removeprefix("out_").split("_")
            assert group == [f"msg_{n}_{k}_{w}" for k in range(50)] + [f"out_{n}_{w}"]
            appended.add(f"resp_{n}_{w}")
            assert (await reopened.get(f"resp_{n}_{w}", owner=None)) is not None  # stored with its items
        for n in range(acknowledged):  # everything acknowledged is there
            for w in range(4):
                assert f"resp_{n}_{w}" in appended
        # a stored response whose items are missing would be half an append too
        for n in range(acknowledged, acknowledged + 2):
            for w in range(4):
                stored = await reopened.get(f"resp_{n}_{w}", owner=None)
                assert (stored is None) == (f"resp_{n}_{w}" not in appended)
    finally:
        await reopened.close()
