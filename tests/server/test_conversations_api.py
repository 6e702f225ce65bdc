"""The Conversations API and `conversation` / `truncation: "auto"` on `POST /v1/responses`, over real
HTTP to a real uvicorn bridge in front of the fixture chat backend (docs/conversations.md).

Each test reads what the backend was sent (its request log) to prove that a conversation's items
really reached the model, and the conversation's items afterwards to prove what was appended.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.clients_backend import chat_requests_with, message_text
from tests.support.servers import RunningServer, read_body, run_app

MODEL = "fixture-scripted"
KEY_A, KEY_B = "sk-conv-test-a-0001", "sk-conv-test-b-0002"


def client(bridge: Any, key: str = KEY_A) -> httpx.Client:
    return httpx.Client(base_url=bridge.root, headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture
def bridge(make_bridge: Callable[..., Any]) -> Any:
    return make_bridge(api_keys=(KEY_A, KEY_B), store="memory")


@pytest.fixture
def http(bridge: Any) -> Iterator[httpx.Client]:
    with client(bridge) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def all_items(http: httpx.Client, conversation_id: str) -> list[dict[str, Any]]:
    page = http.get(f"/v1/conversations/{conversation_id}/items", params={"order": "asc", "limit": 100})
    assert page.status_code == 200, page.text
    return page.json()["data"]


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of each message item, in order."""
    out = []
    for item in items:
        if item.get("type") == "message":
            out.append((item["role"], "".join(p.get("text", "") for p in item["content"])))
    return out


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ------------------------------------------------------------------------------------- the objects


def test_create_retrieve_update_delete(http: httpx.Client) -> None:
    created = http.post("/v1/conversations", json={"metadata": {"topic": "ledgers"}, "items": [user("hello")]})
    assert created.status_code == 200, created.text
    conv = created.json()
    assert conv["object"] == "conversation"
    assert conv["id"].startswith("conv_")
    assert isinstance(conv["created_at"], int) and abs(conv["created_at"] - time.time()) < 60
    assert conv["metadata"] == {"topic": "ledgers"}

    assert http.get(f"/v1/conversations/{conv['id']}").json() == conv
    updated = http.post(f"/v1/conversations/{conv['id']}", json={"metadata": {"topic": "audits", "n": "2"}})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {**conv, "metadata": {"topic": "audits", "n": "2"}}
    assert http.get(f"/v1/conversations/{conv['id']}").json()["metadata"] == {"topic": "audits", "n": "2"}

    deleted = http.delete(f"/v1/conversations/{conv['id']}")
    assert deleted.json() == {"id": conv["id"], "object": "conversation.deleted", "deleted": True}
    for method, path in [("GET", ""), ("POST", ""), ("DELETE", ""), ("GET", "/items")]:
        gone = http.request(method, f"/v1/conversations/{conv['id']}{path}", json={"metadata": {}})
        assert gone.status_code == 404, (method, path, gone.text)
        assert error_of(gone)["type"] == "invalid_request_error"
        assert conv["id"] in error_of(gone)["message"]


def test_empty_body_creates_an_empty_conversation(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations").json()
    assert conv["metadata"] == {}
    page = http.get(f"/v1/conversations/{conv['id']}/items").json()
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_items_are_stored_in_openai_form_and_paged(http: httpx.Client) -> None:
    items = [user(f"u{i}") if i % 2 == 0 else {"role": "assistant", "content": f"a{i}"} for i in range(7)]
    conv = http.post("/v1/conversations", json={"items": items}).json()
    listed = all_items(http, conv["id"])
    assert [t for _, t in texts(listed)] == [f"{'u' if i % 2 == 0 else 'a'}{i}" for i in range(7)]
    first, second = listed[0], listed[1]
    assert first["type"] == "message" and first["status"] == "completed" and first["id"]
    assert first["content"] == [{"type": "input_text", "text": "u0"}]
    assert second["content"] == [{"type": "output_text", "text": "a1", "annotations": []}]
    assert len({item["id"] for item in listed}) == 7

    # desc is the default; pages follow `after` = last_id until has_more is false
    ids = [item["id"] for item in listed]
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if after:
            params["after"] = after
        page = http.get(f"/v1/conversations/{conv['id']}/items", params=params).json()
        assert page["object"] == "list"
        seen += [item["id"] for item in page["data"]]
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == list(reversed(ids))

    one = http.get(f"/v1/conversations/{conv['id']}/items/{ids[3]}")
    assert one.status_code == 200 and one.json() == listed[3]
    missing = http.get(f"/v1/conversations/{conv['id']}/items/msg_nope")
    assert missing.status_code == 404 and "msg_nope" in error_of(missing)["message"]


def test_add_and_delete_items(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations", json={"items": [user("first")]}).json()
    call = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    added = http.post(f"/v1/conversations/{conv['id']}/items", json={"items": [call, output]})
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [i["type"] for i in body["data"]] == ["function_call", "function_call_output"]
    assert body["first_id"] == body["data"][0]["id"] and body["last_id"] == body["data"][1]["id"]
    assert [i["type"] for i in all_items(http, conv["id"])] == ["message", "function_call", "function_call_output"]

    deleted = http.delete(f"/v1/conversations/{conv['id']}/items/{body['data'][0]['id']}")
    assert deleted.status_code == 200 and deleted.json() == http.get(f"/v1/conversations/{conv['id']}").json()
    assert [i["type"] for i in all_items(http, conv["id"])] == ["message", "function_call_output"]
    again = http.delete(f"/v1/conversations/{conv['id']}/items/{body['data'][0]['id']}")
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"items": [user(str(i)) for i in range(21)]}, "items", "array_above_max_length"),
        ({"items": "hello"}, "items", "invalid_type"),
        ({"items": [{"type": "teleport"}]}, "items[0].type", "invalid_value"),
        ({"items": [user("ok"), {"role": "wizard", "content": "x"}]}, "items[1].role", "invalid_value"),
        ({"items": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "items[0].call_id", "invalid_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "object_above_max_properties"),
        ({"metadata": {"k" * 65: "v"}}, "metadata", "invalid_value"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
        ({"metadata": {"k": 3}}, "metadata.k", "invalid_type"),
        ({"metadata": ["k"]}, "metadata", "invalid_type"),
        ({"colour": "blue"}, "colour", "unknown_parameter"),
    ],
)
def test_bad_create_bodies_are_400s_naming_the_field(
    http: httpx.Client, body: dict[str, Any], param: str, code: str
) -> None:
    answer = http.post("/v1/conversations", json=body)
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_limits_at_the_edge_are_accepted(http: httpx.Client) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    conv = http.post("/v1/conversations", json={"items": [user(str(i)) for i in range(20)], "metadata": metadata})
    assert conv.status_code == 200, conv.text
    more = http.post(f"/v1/conversations/{conv.json()['id']}/items", json={"items": [user("x")] * 21})
    assert more.status_code == 400 and error_of(more)["code"] == "array_above_max_length"
    assert len(all_items(http, conv.json()["id"])) == 20


def test_bad_requests_to_item_routes(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations").json()
    for params, param in [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "x"}, "limit"),
                          ({"order": "sideways"}, "order"), ({"include": "nonsense"}, "include")]:  # fmt: skip
        answer = http.get(f"/v1/conversations/{conv['id']}/items", params=params)
        assert answer.status_code == 400 and error_of(answer)["param"] == param, (params, answer.text)
    assert http.post(f"/v1/conversations/{conv['id']}/items", json={}).status_code == 400
    assert http.post(f"/v1/conversations/{conv['id']}", json={}).status_code == 400  # metadata required
    assert http.post("/v1/conversations", content=b"{not json").status_code == 400
    ok = http.get(f"/v1/conversations/{conv['id']}/items", params={"include": "message.output_text.logprobs"})
    assert ok.status_code == 200


def test_another_keys_conversation_is_a_404_everywhere(bridge: Any) -> None:
    with client(bridge, KEY_A) as a, client(bridge, KEY_B) as b:
        conv = a.post("/v1/conversations", json={"items": [user("secret")]}).json()
        item_id = all_items(a, conv["id"])[0]["id"]
        base = f"/v1/conversations/{conv['id']}"
        attempts = [
            ("GET", base, None), ("POST", base, {"metadata": {"x": "y"}}), ("DELETE", base, None),
            ("GET", base + "/items", None), ("POST", base + "/items", {"items": [user("intruder")]}),
            ("GET", f"{base}/items/{item_id}", None), ("DELETE", f"{base}/items/{item_id}", None),
            ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "conversation": conv["id"]}),
        ]  # fmt: skip
        for method, path, body in attempts:
            answer = b.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert error_of(answer)["type"] == "invalid_request_error"
        # and nothing of b's attempts reached a's conversation
        assert texts(all_items(a, conv["id"])) == [("user", "secret")]
        assert a.get(base).json()["metadata"] == {}
    with httpx.Client(base_url=bridge.root) as anonymous:
        assert anonymous.get(base).status_code == 401


def test_store_none_refuses_conversations(make_bridge: Callable[..., Any]) -> None:
    handle = make_bridge(store="none")
    with httpx.Client(base_url=handle.root) as http:
        answer = http.post("/v1/conversations")
        assert answer.status_code == 400 and "store" in error_of(answer)["message"]
        on_response = http.post("/v1/responses", json={"model": MODEL, "input": "x", "conversation": "conv_x"})
        assert on_response.status_code == 404


# ------------------------------------------------------------------------ `conversation` on responses


def backend_messages(backend_requests: Callable[[], list[dict[str, Any]]], token: str) -> list[list[Any]]:
    return [request["messages"] for request in chat_requests_with(backend_requests(), token)]


@pytest.mark.parametrize("form", ["string", "object"])
def test_non_streaming_turns_prepend_and_append(
    http: httpx.Client, backend_requests: Callable[[], list[dict[str, Any]]], form: str
) -> None:
    token = secrets.token_hex(5)
    conv = http.post("/v1/conversations", json={"items": [user(f"My name is {token}.")]}).json()
    ref: Any = conv["id"] if form == "string" else {"id": conv["id"]}
    first = http.post("/v1/responses", json={"model": MODEL, "input": "What is my name?", "conversation": ref})
    assert first.status_code == 200, first.text
    assert first.json()["conversation"] == {"id": conv["id"]}
    assert first.json()["status"] == "completed"
    second = http.post("/v1/responses", json={"model": MODEL, "input": [user("@text Bye.")], "conversation": ref})
    assert second.status_code == 200, second.text

    sent = backend_messages(backend_requests, token)
    assert len(sent) == 2
    assert [(m["role"], message_text(m)) for m in sent[0]] == [("user", f"My name is {token}."),
                                                               ("user", "What is my name?")]  # fmt: skip
    assert [(m["role"], message_text(m)) for m in sent[1]] == [
        ("user", f"My name is {token}."), ("user", "What is my name?"), ("assistant", "Echo: What is my name?"),
        ("user", "@text Bye."),
    ]  # fmt: skip
    listed = all_items(http, conv["id"])
    assert texts(listed) == [
        ("user", f"My name is {token}."), ("user", "What is my name?"), ("assistant", "Echo: What is my name?"),
        ("user", "@text Bye."), ("assistant", "Bye."),
    ]  # fmt: skip
    # The appended output items are the response's own (same ids), and the response is stored.
    assert listed[2]["id"] == first.json()["output"][0]["id"]
    stored = http.get(f"/v1/responses/{first.json()['id']}")
    assert stored.status_code == 200 and stored.json()["conversation"] == {"id": conv["id"]}


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


def test_streaming_turn_appends_and_echoes(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations", json={"items": [user("earlier")]}).json()
    body = {"model": MODEL, "input": "@text streamed answer", "conversation": conv["id"], "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as answer:
        assert answer.status_code == 200
        events = sse_events(answer)
    snapshots = [e for e in events if "response" in e]
    assert [e["type"] for e in snapshots] == ["response.created", "response.in_progress", "response.completed"]
    assert all(e["response"]["conversation"] == {"id": conv["id"]} for e in snapshots)
    assert texts(all_items(http, conv["id"])) == [("user", "earlier"), ("user", "@text streamed answer"),
                                                  ("assistant", "streamed answer")]  # fmt: skip


def test_background_turn_appends_when_it_completes(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations").json()
    body = {"model": MODEL, "input": "@text in the background", "conversation": conv["id"], "background": True}
    queued = http.post("/v1/responses", json=body)
    assert queued.status_code == 200, queued.text
    assert queued.json()["status"] == "queued" and queued.json()["conversation"] == {"id": conv["id"]}
    deadline = time.monotonic() + 20
    while http.get(f"/v1/responses/{queued.json()['id']}").json()["status"] in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    final = http.get(f"/v1/responses/{queued.json()['id']}").json()
    assert final["status"] == "completed" and final["conversation"] == {"id": conv["id"]}
    assert texts(all_items(http, conv["id"])) == [("user", "@text in the background"),
                                                  ("assistant", "in the background")]  # fmt: skip


def test_cancelled_background_turn_appends_nothing(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations", json={"items": [user("before")]}).json()
    body = {"model": "chaos:delay-3", "input": "slow", "conversation": conv["id"], "background": True}
    queued = http.post("/v1/responses", json=body).json()
    cancelled = http.post(f"/v1/responses/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(3.5)  # past the backend's delay: a job that were still running would have finished
    assert http.get(f"/v1/responses/{queued['id']}").json()["status"] == "cancelled"
    assert texts(all_items(http, conv["id"])) == [("user", "before")]


@pytest.mark.parametrize(
    ("model", "stream"), [("chaos:midstream-error", True), ("chaos:status-400", False), ("chaos:status-500", True)]
)
def test_failed_turn_appends_nothing(http: httpx.Client, model: str, stream: bool) -> None:
    conv = http.post("/v1/conversations", json={"items": [user("before")]}).json()
    body = {"model": model, "input": "doomed", "conversation": conv["id"], "stream": stream}
    answer = http.post("/v1/responses", json=body)
    if stream and answer.status_code == 200:
        events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
        assert events[-1]["type"] == "response.failed"
    else:
        assert answer.status_code >= 400
    assert texts(all_items(http, conv["id"])) == [("user", "before")]


def test_store_false_appends_items_without_keeping_the_response(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations").json()
    answer = http.post("/v1/responses", json={"model": MODEL, "input": "@text unkept", "conversation": conv["id"],
                                              "store": False})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert http.get(f"/v1/responses/{answer.json()['id']}").status_code == 404
    assert texts(all_items(http, conv["id"])) == [("user", "@text unkept"), ("assistant", "unkept")]


def test_conversation_with_previous_response_id_is_refused(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations").json()
    first = http.post("/v1/responses", json={"model": MODEL, "input": "hi"}).json()
    for stream in (False, True):
        answer = http.post("/v1/responses", json={"model": MODEL, "input": "x", "conversation": conv["id"],
                                                  "previous_response_id": first["id"], "stream": stream})  # fmt: skip
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert error["code"] == "mutually_exclusive_parameters"
        assert "'previous_response_id' or 'conversation'" in error["message"]
    assert all_items(http, conv["id"]) == []


@pytest.mark.parametrize("ref", ["conv_does_not_exist", {"id": "conv_nope"}])
def test_unknown_conversation_is_a_404(http: httpx.Client, ref: Any) -> None:
    answer = http.post("/v1/responses", json={"model": MODEL, "input": "x", "conversation": ref})
    assert answer.status_code == 404
    assert error_of(answer)["param"] == "conversation"


@pytest.mark.parametrize("ref", [{"name": "x"}, {"id": 3}, ""])
def test_malformed_conversation_is_a_400(http: httpx.Client, ref: Any) -> None:
    answer = http.post("/v1/responses", json={"model": MODEL, "input": "x", "conversation": ref})
    assert answer.status_code == 400, answer.text


def test_concurrent_turns_both_append(http: httpx.Client, bridge: Any) -> None:
    conv = http.post("/v1/conversations").json()
    results: list[int] = []

    def turn(word: str) -> None:
        with client(bridge) as c:
            r = c.post("/v1/responses", json={"model": MODEL, "input": f"@text {word}", "conversation": conv["id"]})
            results.append(r.status_code)

    threads = [threading.Thread(target=turn, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    listed = texts(all_items(http, conv["id"]))
    assert len(listed) == 12
    # each turn's input and output are next to each other: appended as one unit
    for index in range(0, 12, 2):
        (role_in, text_in), (role_out, text_out) = listed[index], listed[index + 1]
        assert (role_in, role_out) == ("user", "assistant") and text_in == f"@text {text_out}"


# ------------------------------------------------------------------------------ truncation: "auto"


class SmallContextBackend:
    """The fixture backend behind a context limit: a prompt whose messages exceed `limit` bytes of
    JSON gets llama.cpp's overflow answer (HTTP 400, `exceed_context_size_error`, no code string)."""

    def __init__(self, limit: int) -> None:
        from fixtures.backend import create_app

        self.limit = limit
        self.inner = create_app()
        self.refused = 0
        self.accepted: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.inner(scope, receive, send)
            return
        body = await read_body(receive)
        request = orjson.loads(body)
        size = len(orjson.dumps(request.get("messages")))
        if size > self.limit:
            self.refused += 1
            error = {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                               "increasing it", "type": "exceed_context_size_error",
                               "n_prompt_tokens": size // 4, "n_ctx": self.limit // 4}}  # fmt: skip
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": orjson.dumps(error)})
            return
        self.accepted.append(request)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.inner(scope, replay, send)


@pytest.fixture
def small_backend() -> Iterator[tuple[SmallContextBackend, RunningServer]]:
    backend = SmallContextBackend(limit=3000)
    with run_app(backend) as running:
        yield backend, running


def long_history(n: int, size: int = 200) -> list[dict[str, Any]]:
    return [user(f"old turn {i}: " + "x" * size) if i % 2 == 0 else {"role": "assistant", "content": f"ok {i}"}
            for i in range(n)]  # fmt: skip


def small_bridge(make_bridge: Callable[..., Any], running: RunningServer, **upstream: Any) -> Any:
    return make_bridge(store="memory", upstream={"base_url": running.url + "/v1", **upstream})


@pytest.mark.parametrize("stream", [False, True])
def test_truncation_auto_learns_the_window_from_the_backend(
    make_bridge: Callable[..., Any], small_backend: tuple[SmallContextBackend, RunningServer], stream: bool
) -> None:
    backend, running = small_backend
    handle = small_bridge(make_bridge, running)
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conv = http.post("/v1/conversations", json={"items": long_history(20)}).json()
        http.post(f"/v1/conversations/{conv['id']}/items", json={"items": long_history(20)})
        body = {"model": MODEL, "input": "@text latest", "conversation": conv["id"], "truncation": "auto",
                "instructions": "Be brief.", "stream": stream}  # fmt: skip
        answer = http.post("/v1/responses", json=body)
        assert answer.status_code == 200, answer.text
        final = sse_events(answer)[-1]["response"] if stream else answer.json()
        assert final["status"] == "completed" and final["truncation"] == "auto"
        assert backend.refused == 1  # the first try overflowed, the retry fitted
        sent = backend.accepted[-1]["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert message_text(sent[-1]) == "@text latest"
        assert len(sent) < 42  # oldest items dropped
        # what was dropped is the oldest: the kept history is a suffix of the conversation
        history = [message_text(m) for m in sent[1:-1]]
        stored_texts = [t for _, t in texts(all_items(http, conv["id"]))]
        assert history == stored_texts[len(stored_texts) - 2 - len(history) : -2]
        # the store keeps everything: 40 old items + this turn's input and output
        assert len(stored_texts) == 42

        # the next turn starts from the learned window: no second overflow
        again = http.post("/v1/responses", json={**body, "input": "@text again", "stream": False})
        assert again.status_code == 200, again.text
        assert backend.refused == 1


def test_truncation_disabled_lets_the_overflow_stand(
    make_bridge: Callable[..., Any], small_backend: tuple[SmallContextBackend, RunningServer]
) -> None:
    backend, running = small_backend
    handle = small_bridge(make_bridge, running)
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conv = http.post("/v1/conversations", json={"items": long_history(20)}).json()
        for stream in (False, True):
            answer = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "conversation": conv["id"],
                                                      "stream": stream})  # fmt: skip
            assert answer.status_code == 400
            assert error_of(answer)["code"] == "context_length_exceeded"  # llama.cpp's wording, OpenAI's code
        assert backend.refused == 2  # no retry
        assert len(all_items(http, conv["id"])) == 20  # nothing appended


def test_truncation_auto_with_a_configured_window_trims_before_sending(
    make_bridge: Callable[..., Any], small_backend: tuple[SmallContextBackend, RunningServer]
) -> None:
    backend, running = small_backend
    handle = small_bridge(make_bridge, running, context_window=1200)
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conv = http.post("/v1/conversations", json={"items": long_history(20)}).json()
        call = [{"type": "function_call", "call_id": "call_9", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_9", "output": "y" * 300}]  # fmt: skip
        http.post(f"/v1/conversations/{conv['id']}/items", json={"items": call})
        tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
        body = {"model": MODEL, "input": "@text fits", "conversation": conv["id"], "truncation": "auto",
                "tools": tools}  # fmt: skip
        answer = http.post("/v1/responses", json=body)
        assert answer.status_code == 200, answer.text
        assert backend.refused == 0  # trimmed up front from the configured window
        sent = backend.accepted[-1]["messages"]
        assert message_text(sent[-1]) == "@text fits"
        # the tool call and its output stay together (both kept or both gone)
        has_call = any(m.get("tool_calls") for m in sent)
        has_output = any(m["role"] == "tool" for m in sent)
        assert has_call == has_output
        assert len(all_items(http, conv["id"])) == 24


def test_context_window_is_an_upstream_setting() -> None:
    from server.config import ConfigError
    from server.config_file import parse_config

    table = {"upstreams": [{"name": "local", "base_url": "http://127.0.0.1:9/v1", "context_window": 8192}]}
    assert parse_config(table, env={}).upstreams[0].context_window == 8192
    assert parse_config({"upstreams": [{"base_url": "http://h/v1"}]}, env={}).upstreams[0].context_window is None
    for bad in (0, -5, "8k", True):
        with pytest.raises(ConfigError, match="context_window"):
            parse_config({"upstreams": [{"base_url": "http://h/v1", "context_window": bad}]}, env={})


def test_oversized_bodies_and_unstorable_ids_are_refused(make_bridge: Callable[..., Any]) -> None:
    handle = make_bridge(store="memory", max_body_bytes=2000)
    with httpx.Client(base_url=handle.root, timeout=30) as http:
        big = http.post("/v1/conversations", json={"items": [user("x" * 3000)]})
        assert big.status_code == 413 and error_of(big)["code"] == "request_too_large"
        nul = http.post("/v1/conversations", json={"items": [{**user("hi"), "id": "msg_a\u0000b"}]})
        assert nul.status_code == 400 and error_of(nul)["param"] == "items[0].id", nul.text
        long_id = http.post("/v1/conversations", json={"items": [{**user("hi"), "id": "m" * 300}]})
        assert long_id.status_code == 400, long_id.text
        conv = http.post("/v1/conversations").json()
        assert http.get(f"/v1/conversations/{conv['id']}").status_code == 200


@pytest.mark.parametrize("mode", ["json", "stream", "background"])
def test_a_failed_append_is_never_acknowledged(make_bridge: Callable[..., Any], mode: str) -> None:
    """The store fails the write that appends the turn: the client is told `store_unavailable`, not
    `completed`, and the conversation does not hold half a turn."""
    from server.store import StoreUnavailable

    handle = make_bridge(store="memory")
    store = handle.app.state.store
    real_put = store.put

    async def failing_put(response: dict, items: list, *, owner: Any, conversation_id: Any = None) -> None:
        if conversation_id is not None:
            raise StoreUnavailable("disk on fire")
        await real_put(response, items, owner=owner, conversation_id=conversation_id)

    real_update = store.update_response

    async def failing_update(response: dict, *, owner: Any, **conversation: Any) -> bool:
        if conversation.get("conversation_id") is not None:  # a background job's final write + append
            raise StoreUnavailable("disk on fire")
        return await real_update(response, owner=owner, **conversation)

    with httpx.Client(base_url=handle.root, timeout=30) as http:
        conv = http.post("/v1/conversations", json={"items": [user("before")]}).json()
        store.put = failing_put
        store.update_response = failing_update
        body: dict[str, Any] = {"model": MODEL, "input": "@text lost", "conversation": conv["id"]}
        if mode == "json":
            answer = http.post("/v1/responses", json=body)
            assert answer.status_code == 503 and error_of(answer)["code"] == "store_unavailable"
        elif mode == "stream":
            with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as answer:
                events = sse_events(answer)
            assert events[-1]["type"] == "response.failed"
            assert events[-1]["response"]["error"]["code"] == "store_unavailable"
            assert not any(e["type"] == "response.completed" for e in events)
        else:
            queued = http.post("/v1/responses", json={**body, "background": True}).json()
            deadline = time.monotonic() + 20
            while (final := http.get(f"/v1/responses/{queued['id']}").json())["status"] in ("queued", "in_progress"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert final["status"] == "failed" and final["error"]["code"] == "store_unavailable"
        assert texts(all_items(http, conv["id"])) == [("user", "before")]
