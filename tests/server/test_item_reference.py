"""`item_reference` inputs (server/history.py): resolved from the stored history or the store to the
item they name, so the backend sees that item; an unknown id is a 404 `item_not_found` naming the
input position, before any backend call and before any stream starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import BridgeHandle
from tests.support.assertions import assert_openai_error

Requests = Callable[[], list[dict[str, Any]]]


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/responses", json={"model": "fixture-scripted", **body}, timeout=30)


def _first_answer(url: str, text: str) -> dict[str, Any]:
    response = _post(url, {"input": f"@text {text}"})
    assert response.status_code == 200, response.text[:300]
    return response.json()


def _messages_sent(backend_requests: Requests) -> list[dict[str, Any]]:
    return backend_requests()[-1]["messages"]


def test_a_reference_to_a_stored_output_item_sends_that_item(
    bridge: BridgeHandle, backend_requests: Requests, clear_backend_requests: Callable[[], None]
) -> None:
    first = _first_answer(bridge.url, "the stored answer")
    (message,) = first["output"]
    clear_backend_requests()
    response = _post(bridge.url, {"input": [{"type": "item_reference", "id": message["id"]},
                                            {"role": "user", "content": "@text next"}]})  # fmt: skip
    assert response.status_code == 200, response.text[:300]
    assert [(m["role"], m["content"]) for m in _messages_sent(backend_requests)] == [
        ("assistant", "the stored answer"), ("user", "@text next")]


def test_a_reference_to_a_stored_input_item_sends_that_item(
    bridge: BridgeHandle, backend_requests: Requests, clear_backend_requests: Callable[[], None]
) -> None:
    first = _first_answer(bridge.url, "anything")
    items = httpx.get(f"{bridge.url}/responses/{first['id']}/input_items", timeout=10).json()["data"]
    (user,) = items
    clear_backend_requests()
    response = _post(bridge.url, {"input": [{"type": "item_reference", "id": user["id"]}]})
    assert response.status_code == 200, response.text[:300]
    assert [(m["role"], m["content"]) for m in _messages_sent(backend_requests)] == [
        ("user", [{"type": "text", "text": "@text anything"}])]


def test_a_reference_into_the_previous_responses_history(
    bridge: BridgeHandle, backend_requests: Requests, clear_backend_requests: Callable[[], None]
) -> None:
    first = _first_answer(bridge.url, "remember me")
    clear_backend_requests()
    body = {"previous_response_id": first["id"], "input": [{"type": "item_reference", "id": first["output"][0]["id"]}]}
    assert _post(bridge.url, body).status_code == 200
    # the history, then the referenced item once more (the reference is an input of its own)
    assert [(m["role"], m["content"]) for m in _messages_sent(backend_requests)] == [
        ("user", [{"type": "text", "text": "@text remember me"}]), ("assistant", "remember me"), ("assistant", "remember me")]


def test_an_unknown_reference_is_404_item_not_found_before_the_backend(
    bridge: BridgeHandle, backend_requests: Requests, clear_backend_requests: Callable[[], None]
) -> None:
    clear_backend_requests()
    for stream in (False, True):
        response = _post(bridge.url, {"stream": stream, "input": [{"role": "user", "content": "hi"},
                                                                  {"type": "item_reference", "id": "msg_nope"}]})
        error = assert_openai_error(response, 404)
        assert error == {"message": "Item with id 'msg_nope' not found.", "type": "invalid_request_error",
                         "param": "input[1].id", "code": "item_not_found"}
    assert backend_requests() == []


def test_a_reference_without_a_store_is_404_item_not_found(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(store="none")
    error = assert_openai_error(_post(handle.url, {"input": [{"type": "item_reference", "id": "msg_1"}]}), 404)
    assert (error["code"], error["param"]) == ("item_not_found", "input[0].id")


def test_another_owners_item_is_not_found(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(api_keys=("key-a", "key-b"))
    first = httpx.post(handle.url + "/responses", json={"model": "fixture-scripted", "input": "@text mine"},
                       headers={"authorization": "Bearer key-a"}, timeout=30).json()  # fmt: skip
    response = httpx.post(handle.url + "/responses", headers={"authorization": "Bearer key-b"}, timeout=30,
                          json={"model": "fixture-scripted",
                                "input": [{"type": "item_reference", "id": first["output"][0]["id"]}]})  # fmt: skip
    assert assert_openai_error(response, 404)["code"] == "item_not_found"
