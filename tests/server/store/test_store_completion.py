"""A background job's final write on a conversation: ``update_response(..., conversation_id=,
input_items=)`` stores the final status and appends the turn in ONE transaction, on every engine.

There is no second write any more, so a kill between "response completed" and "turn appended" cannot
happen by construction; what is tested here is that the one write is all or nothing: a refused update
(cancelled, gone, conversation missing) appends nothing, a successful one appends exactly once, and
the background job uses it (a store failing that one call leaves the response failed and the
conversation without the turn)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.store import ConversationNotFound, NullStore, StoreUnavailable
from tests.server.test_store import all_engines, ids, response, user

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def conv(cid: str) -> dict:
    return {"id": cid, "object": "conversation", "created_at": 1_700_000_000, "metadata": {}}


async def start_job(store: Any, rid: str, owner: str | None = "o") -> None:
    """What a background start stores: the queued response, no conversation append yet."""
    await store.put(response(rid, status="in_progress", output=[]), [user("q", f"msg_q_{rid}")], owner=owner)


@all_engines
async def test_a_completed_update_appends_input_then_output_exactly_once(store: Any) -> None:
    await store.create_conversation(conv("conv_u"), [user("before", "msg_before")], owner="o")
    await start_job(store, "resp_bg")
    assert ids(await store.all_conversation_items("conv_u", owner="o")) == ["msg_before"]  # nothing yet
    done = response("resp_bg")
    inputs = [user("q", "msg_q_resp_bg")]
    assert await store.update_response(done, owner="o", conversation_id="conv_u", input_items=inputs) is True
    assert (await store.get("resp_bg", owner="o"))["status"] == "completed"
    assert ids(await store.all_conversation_items("conv_u", owner="o")) == [
        "msg_before", "msg_q_resp_bg", "msg_out_resp_bg",
    ]  # fmt: skip
    # The same write again (a retry after a lost answer) appends nothing more.
    assert await store.update_response(done, owner="o", conversation_id="conv_u", input_items=inputs) is True
    assert len(await store.all_conversation_items("conv_u", owner="o")) == 3
    assert (await store.get_item("msg_out_resp_bg", owner="o"))["id"] == "msg_out_resp_bg"
    assert (await store.get_item("msg_q_resp_bg", owner="o"))["id"] == "msg_q_resp_bg"
    assert ids(await store.input_items("resp_bg", owner="o")) == ["msg_q_resp_bg"]


@all_engines
async def test_without_input_items_the_stored_ones_are_appended(store: Any) -> None:
    await store.create_conversation(conv("conv_s"), [], owner=None)
    await start_job(store, "resp_s", owner=None)
    assert await store.update_response(response("resp_s"), owner=None, conversation_id="conv_s") is True
    assert ids(await store.all_conversation_items("conv_s", owner=None)) == ["msg_q_resp_s", "msg_out_resp_s"]


@all_engines
async def test_a_refused_update_appends_nothing(store: Any) -> None:
    await store.create_conversation(conv("conv_r"), [user("before", "msg_before")], owner="o")
    await start_job(store, "resp_c")
    assert (await store.request_cancel("resp_c", owner="o"))["status"] == "cancelled"
    refused = await store.update_response(
        response("resp_c"), owner="o", conversation_id="conv_r", input_items=[user("q", "msg_q_resp_c")]
    )
    assert refused is False
    assert (await store.get("resp_c", owner="o"))["status"] == "cancelled"
    assert ids(await store.all_conversation_items("conv_r", owner="o")) == ["msg_before"]
    # gone (or another owner's): refused too, nothing appended
    assert await store.update_response(response("resp_none"), owner="o", conversation_id="conv_r") is False
    await start_job(store, "resp_other", owner="someone else")
    assert await store.update_response(response("resp_other"), owner="o", conversation_id="conv_r") is False
    assert ids(await store.all_conversation_items("conv_r", owner="o")) == ["msg_before"]


@all_engines
async def test_a_missing_conversation_leaves_the_response_unwritten(store: Any) -> None:
    await store.create_conversation(conv("conv_theirs"), [], owner="other")
    await start_job(store, "resp_m")
    for missing in ("conv_gone", "conv_theirs"):
        with pytest.raises(ConversationNotFound):
            await store.update_response(response("resp_m"), owner="o", conversation_id=missing)
        assert (await store.get("resp_m", owner="o"))["status"] == "in_progress"  # rolled back with it
    assert await store.get_item("msg_out_resp_m", owner="o") is None
    assert await store.all_conversation_items("conv_theirs", owner="other") == []


async def test_the_null_store_refuses_a_conversation_append() -> None:
    with pytest.raises(ConversationNotFound):
        await NullStore().update_response(response("r"), owner=None, conversation_id="conv_x")


# ------------------------------------------------------------------------- through the server


def _wait_final(http: httpx.Client, response_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while (final := http.get(f"/v1/responses/{response_id}").json())["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline, final
        time.sleep(0.05)
    return final


def _item_texts(http: httpx.Client, conversation_id: str) -> list[str]:
    page = http.get(f"/v1/conversations/{conversation_id}/items", params={"order": "asc", "limit": 100}).json()
    return [part.get("text", "") for item in page["data"] for part in item.get("content") or []]


def test_a_background_turn_is_stored_with_its_append_in_one_write(make_bridge: Callable[..., Any]) -> None:
    """The job's final status and its conversation append are one store call: no `put` with a
    conversation follows it (the two-step path is gone), and it appends the turn exactly once."""
    handle = make_bridge(store="memory")
    store = handle.app.state.store
    calls: list[tuple[str, Any]] = []
    real_put, real_update = store.put, store.update_response

    async def put(response: dict, items: list, *, owner: Any, conversation_id: Any = None) -> None:
        calls.append(("put", conversation_id))
        await real_put(response, items, owner=owner, conversation_id=conversation_id)

    async def update_response(response: dict, *, owner: Any, **conversation: Any) -> bool:
        calls.append(("update_response", conversation.get("conversation_id")))
        return await real_update(response, owner=owner, **conversation)

    store.put, store.update_response = put, update_response
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conversation = http.post("/v1/conversations").json()["id"]
        body = {"model": "fixture-scripted", "input": "@text one turn", "conversation": conversation, "background": True}
        queued = http.post("/v1/responses", json=body).json()
        assert _wait_final(http, queued["id"])["status"] == "completed"
        assert _item_texts(http, conversation) == ["@text one turn", "one turn"]
    assert ("put", conversation) not in calls, calls
    assert calls.count(("update_response", conversation)) == 1, calls


def test_a_failed_final_write_leaves_no_completed_response_and_no_turn(make_bridge: Callable[..., Any]) -> None:
    handle = make_bridge(store="memory")
    store = handle.app.state.store
    real_update = store.update_response

    async def update_response(response: dict, *, owner: Any, **conversation: Any) -> bool:
        if conversation.get("conversation_id") is not None:
            raise StoreUnavailable("disk on fire")
        return await real_update(response, owner=owner, **conversation)

    store.update_response = update_response
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conversation = http.post("/v1/conversations").json()["id"]
        body = {"model": "fixture-scripted", "input": "@text lost", "conversation": conversation, "background": True}
        queued = http.post("/v1/responses", json=body).json()
        final = _wait_final(http, queued["id"])
        assert final["status"] == "failed" and final["error"]["code"] == "store_unavailable", final
        assert _item_texts(http, conversation) == []
