"""The server's use of the store's guarantees: input the store cannot hold is a 400 before the
backend is asked, and background jobs left running by a stopped bridge end at the next start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.store import open_store
from tests.server.test_store import pg_schema, postgres_url, store_spec  # noqa: F401  (engine fixtures)


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/responses", json=body, timeout=30)


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call_output", "call_id": "call_\x00x", "output": "ok"}, "input[0].call_id"),
        ({"type": "message", "role": "user", "content": "hi", "id": "msg_" + "x" * 3000}, "input[0].id"),
    ],
    ids=["nul-in-call-id", "over-long-item-id"],
)
def test_input_the_store_cannot_hold_is_a_400_before_the_backend(
    make_bridge: Any, backend_requests: Any, clear_backend_requests: Any, item: dict[str, Any], param: str
) -> None:
    bridge = make_bridge(store="memory")
    clear_backend_requests()
    answer = _post(bridge.url, {"model": "m", "input": [item]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert backend_requests() == []  # refused before the model ran


def test_the_same_input_is_served_when_it_is_not_stored(make_bridge: Any) -> None:
    bridge = make_bridge(store="memory")
    item = {"type": "message", "role": "user", "content": "hi", "id": "msg_" + "x" * 3000}
    answer = _post(bridge.url, {"model": "m", "input": [item], "store": False})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed"


def test_a_background_job_left_by_a_stopped_bridge_fails_at_the_next_start(tmp_path: Path, make_bridge: Any) -> None:
    spec = f"sqlite:///{tmp_path / 'bridge.db'}"

    async def leave_a_running_job() -> None:  # what a bridge killed mid-job leaves behind
        store = open_store(spec)
        await store.open()
        job = {"id": "resp_orphan1", "object": "response", "created_at": int(time.time()), "status": "in_progress",
               "background": True, "model": "m", "output": []}  # fmt: skip
        await store.put(job, [], owner=None)
        await store.append_events("resp_orphan1", [{"type": "response.created", "sequence_number": 0,
                                                    "response": job}])  # fmt: skip
        await store.close()

    asyncio.run(leave_a_running_job())
    bridge = make_bridge(store=spec)
    got = httpx.get(bridge.url + "/responses/resp_orphan1", timeout=10)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "server_restarted"
    # a follower of its stream is told the end instead of waiting for ever
    with httpx.stream("GET", bridge.url + "/responses/resp_orphan1", params={"stream": "true"}, timeout=10) as live:
        text = "".join(live.iter_text())
    assert "event: response.failed" in text
    assert text.rstrip().endswith("data: [DONE]")


# ------------------------------------------------------------------ request shape, before parsing


def test_the_shape_meter_names_the_field_and_finds_names_split_across_reads() -> None:
    from server.body import JSONShapeMeter
    from server.errors import ApiError

    body = b'{"model":"m","input":"hi","to' + b'ols":[' + b'{"type":"function","name":"f"},' * 300 + b'{}]}'
    meter = JSONShapeMeter(200)
    with pytest.raises(ApiError) as refused:
        for at in range(0, len(body), 29):  # reads that cut the field name in two
            meter.feed(body[at:at + 29])
    assert refused.value.status == 400
    assert refused.value.param == "tools"
    assert meter.total == 201  # refused at the first container past the ceiling, not at the end


def test_the_shape_meter_lets_a_request_under_the_ceiling_through() -> None:
    from server.body import JSONShapeMeter

    meter = JSONShapeMeter(200)
    body = b'{"model":"m","input":[' + b'{"role":"user","content":"x"},' * 150 + b'{}]}'
    for at in range(0, len(body), 64):
        meter.feed(body[at:at + 64])
    assert meter.total == 153 and meter.by_field["input"] == 152  # the outer object comes before the name


# ------------------------------------------------------------------ ids no engine can look up


@pytest.mark.parametrize("store_spec", ["memory", "sqlite", "postgresql"], indirect=True)
def test_ids_with_nul_or_over_long_are_not_found_on_every_engine(make_bridge: Any, store_spec: str) -> None:  # noqa: F811
    bridge = make_bridge(store=store_spec)
    for bad in ("resp_\x00x", "resp_" + "y" * 5000):
        quoted = httpx.URL(bridge.url + "/responses/").copy_with().join(httpx.URL(bad.replace("\x00", "%00")))
        got = httpx.get(str(quoted), timeout=10)
        assert got.status_code == 404, got.text
        assert got.json()["error"]["type"] == "invalid_request_error"
        answer = _post(bridge.url, {"model": "m", "input": "hi", "previous_response_id": bad})
        assert answer.status_code == 404, answer.text  # the same "not found" as any unknown id, never a 500
        assert answer.json()["error"]["param"] == "previous_response_id"
        assert answer.json()["error"]["code"] == "previous_response_not_found"
