"""The stored-response routes (server/stored.py) and background mode (server/background.py), through a
real uvicorn server and the real openai SDK.

The app under test is assembled here: the stored routes, a store, and a small ``POST /v1/responses``
that runs ``start_background`` with a paced stream from the real ``ChatStreamTranslator`` (so the events
are the translator's, and the SDK parses them). The full bridge wiring is tested with app.py's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import stored
from server.background import (
    begin_background_shutdown,
    shutdown_background,
    start_background,
)
from server.errors import ApiError
from server.store import open_store
from tests.server.test_store import _drop_schema, postgres_url  # noqa: F401  (postgres_url is a fixture)
from tests.support.servers import free_port, poll, run_app
from translator import ChatStreamTranslator

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------ the app


def _chunks(words: list[str]) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return out


class Upstream:
    """Stands in for the backend connection: records whether it was closed (cancel must close it)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.opened = 0


def make_app(store_spec: str) -> Starlette:
    upstreams: dict[str, Upstream] = {}

    async def create(request: Request) -> Response:
        body = orjson.loads(await request.body())
        words = [f"w{n} " for n in range(int(body.get("words", 5)))]
        delay = float(body.get("delay", 0.0))
        request_dict = {"model": "m", "input": body.get("input", "hi"), "background": True}
        translator = ChatStreamTranslator(request_dict, response_id=f"resp_{uuid.uuid4().hex}")
        upstream = upstreams.setdefault(translator.id, Upstream())

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            upstream.opened += 1
            try:
                yield translator.start()
                for n, chunk in enumerate(_chunks(words)):
                    if n == body.get("fail_after"):
                        raise ApiError(502, "Upstream fixture broke off.", code="upstream_error")
                    await asyncio.sleep(delay)
                    events = translator.feed(chunk)
                    if events:
                        yield events
                yield translator.finish(True)
            finally:
                upstream.closed.set()

        queued = {**translator.response, "status": "queued"}
        items = [{"id": f"msg_in_{translator.id}", "type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": request_dict["input"]}]}]  # fmt: skip
        try:
            answer = await start_background(request.app, queued, items, run, owner=request.scope.get(stored.OWNER_KEY),
                                            store_requested=body.get("store", True))  # fmt: skip
        except ApiError as exc:
            return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json")
        return Response(orjson.dumps(answer), media_type="application/json")

    async def put(request: Request) -> Response:
        """Test helper: store a plain (non-background) response with given input items."""
        body = orjson.loads(await request.body())
        await request.app.state.store.put(body["response"], body["input_items"], owner=request.scope.get(stored.OWNER_KEY))
        return Response(b"{}", media_type="application/json")

    async def upstream_state(request: Request) -> Response:
        u = upstreams.get(request.path_params["response_id"])
        state = {"opened": u.opened, "closed": u.closed.is_set()} if u else None
        return Response(orjson.dumps(state), media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(store_spec)
        await store.open()
        app.state.store = store
        try:
            yield
        finally:
            await shutdown_background(app)
            await store.close()

    class OwnerFromHeader:
        """What app.py's auth middleware does, reduced: the x-owner header becomes the owner."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                for name, value in scope["headers"]:
                    if name == b"x-owner":
                        scope[stored.OWNER_KEY] = value.decode()
            await self.app(scope, receive, send)

    app = Starlette(
        routes=[
            Route("/v1/responses", create, methods=["POST"]),
            Route("/_test/put", put, methods=["POST"]),
            Route("/_test/upstream/{response_id}", upstream_state, methods=["GET"]),
            *stored.routes(),
        ],
        lifespan=lifespan,
    )
    app.state.store = None
    app.state.begin_shutdown = lambda: begin_background_shutdown(app)  # what tests.support.servers calls first
    app.add_middleware(OwnerFromHeader)
    return app


@pytest.fixture(params=["memory", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    spec = "memory" if request.param == "memory" else f"sqlite:///{tmp_path}/api.db"
    with run_app(make_app(spec)) as srv:
        yield srv


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=30)


def put(server: Any, response: dict, items: list[dict], owner: str | None = None) -> None:
    headers = {"x-owner": owner} if owner else {}
    r = httpx.post(server.url + "/_test/put", json={"response": response, "input_items": items}, headers=headers)
    r.raise_for_status()


def a_response(rid: str, **extra: Any) -> dict:
    body = {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": "completed", "model": "m",
        "output": [{"id": f"msg_out_{rid}", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "answer", "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "background": False,
    }  # fmt: skip
    body.update(extra)
    return body


def item(n: int) -> dict:
    return {"id": f"msg_{n:03d}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": f"text {n}"}]}  # fmt: skip


# ------------------------------------------------------------------------- retrieve / delete / list


def test_retrieve_returns_the_stored_response(server: Any, client: openai.OpenAI) -> None:
    put(server, a_response("resp_get"), [item(1)])
    got = client.responses.retrieve("resp_get")
    assert got.id == "resp_get"
    assert got.status == "completed"
    assert got.output_text == "answer"


def test_missing_response_is_a_404_in_openai_shape(server: Any, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_nope")
    assert caught.value.status_code == 404
    body = httpx.get(server.url + "/v1/responses/resp_nope").json()
    assert body == {"error": {"message": "No response found with id 'resp_nope'.", "type": "invalid_request_error",
                              "param": "response_id", "code": "not_found"}}  # fmt: skip
    for method, path in [("DELETE", "/v1/responses/resp_nope"), ("GET", "/v1/responses/resp_nope/input_items"),
                         ("POST", "/v1/responses/resp_nope/cancel")]:  # fmt: skip
        r = httpx.request(method, server.url + path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_delete_then_retrieve_is_404(server: Any, client: openai.OpenAI) -> None:
    put(server, a_response("resp_del"), [item(1)])
    r = httpx.delete(server.url + "/v1/responses/resp_del")
    assert r.status_code == 200
    assert r.json() == {"id": "resp_del", "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_del")
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_del")
    put(server, a_response("resp_del2"), [])
    assert client.responses.delete("resp_del2") is None  # the SDK's delete returns None on success
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_del2")


def test_owners_do_not_see_each_other(server: Any) -> None:
    put(server, a_response("resp_alice"), [item(1)], owner="alice")
    base = server.url + "/v1/responses/resp_alice"
    assert httpx.get(base, headers={"x-owner": "alice"}).status_code == 200
    assert httpx.get(base, headers={"x-owner": "bob"}).status_code == 404
    assert httpx.get(base).status_code == 404
    assert httpx.get(base + "/input_items", headers={"x-owner": "bob"}).status_code == 404
    assert httpx.delete(base, headers={"x-owner": "bob"}).status_code == 404
    assert httpx.get(base, headers={"x-owner": "alice"}).status_code == 200


def test_input_items_default_page_is_newest_first(server: Any, client: openai.OpenAI) -> None:
    put(server, a_response("resp_list"), [item(n) for n in range(25)])
    page = client.responses.input_items.list("resp_list")
    assert [i.id for i in page.data] == [f"msg_{n:03d}" for n in range(24, 4, -1)]
    assert page.has_more is True
    assert page.first_id == "msg_024" and page.last_id == "msg_005"
    # the SDK's auto-paging follows `after` = last_id
    assert [i.id for i in client.responses.input_items.list("resp_list", limit=7)] == [
        f"msg_{n:03d}" for n in range(24, -1, -1)
    ]


def test_input_items_paging_with_after_before_order(server: Any, client: openai.OpenAI) -> None:
    put(server, a_response("resp_pg"), [item(n) for n in range(10)])
    page = client.responses.input_items.list("resp_pg", order="asc", limit=3, after="msg_002")
    assert [i.id for i in page.data] == ["msg_003", "msg_004", "msg_005"] and page.has_more
    page = client.responses.input_items.list("resp_pg", order="asc", limit=3, after="msg_007")
    assert [i.id for i in page.data] == ["msg_008", "msg_009"] and not page.has_more
    url = server.url + "/v1/responses/resp_pg/input_items"
    body = httpx.get(url, params={"order": "asc", "before": "msg_005", "limit": 2}).json()
    assert [i["id"] for i in body["data"]] == ["msg_003", "msg_004"] and body["has_more"] is True
    body = httpx.get(url, params={"order": "desc", "after": "msg_008", "before": "msg_004"}).json()
    assert [i["id"] for i in body["data"]] == ["msg_007", "msg_006", "msg_005"] and body["has_more"] is False
    body = httpx.get(url, params={"after": "msg_000"}).json()
    assert body == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "x"}, "limit"),
     ({"order": "up"}, "order"), ({"after": "msg_unknown"}, "after")],
)  # fmt: skip
def test_input_items_bad_parameters_are_400(server: Any, params: dict, param: str) -> None:
    put(server, a_response("resp_bad"), [item(1)])
    r = httpx.get(server.url + "/v1/responses/resp_bad/input_items", params=params)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_stream_and_cancel_of_a_plain_response_are_400(server: Any, client: openai.OpenAI) -> None:
    put(server, a_response("resp_plain"), [])
    r = httpx.get(server.url + "/v1/responses/resp_plain", params={"stream": "true"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel("resp_plain")
    r = httpx.get(server.url + "/v1/responses/resp_plain", params={"starting_after": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "starting_after"


# ---------------------------------------------------------------------------------- background mode


def start(server: Any, **body: Any) -> dict:
    r = httpx.post(server.url + "/v1/responses", json=body, headers=body.pop("headers", None) or {})
    assert r.status_code == 200, r.text
    return r.json()


def test_background_response_is_queued_then_completes(server: Any, client: openai.OpenAI) -> None:
    queued = start(server, words=4, delay=0.02, input="run")
    assert queued["status"] == "queued" and queued["background"] is True
    rid = queued["id"]
    assert poll(lambda: client.responses.retrieve(rid).status == "completed", timeout=20)
    done = client.responses.retrieve(rid)
    assert done.output_text == "w0 w1 w2 w3 "
    assert done.background is True
    assert [i.id for i in client.responses.input_items.list(rid)] == [f"msg_in_{rid}"]


def test_background_stream_replays_from_the_middle(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=6, delay=0.01)["id"]
    assert poll(lambda: client.responses.retrieve(rid).status == "completed", timeout=20)
    full = list(client.responses.retrieve(rid, stream=True))
    numbers = [e.sequence_number for e in full]
    assert numbers == list(range(len(full))) and full[-1].type == "response.completed"
    middle = numbers[len(numbers) // 2]
    tail = list(client.responses.retrieve(rid, stream=True, starting_after=middle))
    assert [e.sequence_number for e in tail] == numbers[middle + 1 :]
    assert [e.type for e in tail] == [e.type for e in full[middle + 1 :]]


def test_background_stream_follows_live_events(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=12, delay=0.15)["id"]
    seen: list[Any] = []
    statuses_during: list[str] = []
    for event in client.responses.retrieve(rid, stream=True, starting_after=1):
        seen.append(event)
        if event.type == "response.output_text.delta" and not statuses_during:
            statuses_during.append(client.responses.retrieve(rid).status)
    assert seen[0].sequence_number == 2
    assert seen[-1].type == "response.completed"
    assert statuses_during == ["in_progress"]  # we followed it while it ran, not after
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert text == "".join(f"w{n} " for n in range(12))


def test_background_cancel_stops_the_upstream(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=200, delay=0.05)["id"]
    assert poll(lambda: client.responses.retrieve(rid).status == "in_progress", timeout=10)
    cancelled = client.responses.cancel(rid)
    assert cancelled.status == "cancelled"
    state = httpx.get(f"{server.url}/_test/upstream/{rid}").json()
    assert state == {"opened": 1, "closed": True}
    time.sleep(0.3)  # a job that kept running would overwrite the status now
    assert client.responses.retrieve(rid).status == "cancelled"
    assert client.responses.cancel(rid).status == "cancelled"  # idempotent
    # a follower of a cancelled response ends instead of waiting for ever
    events = list(client.responses.retrieve(rid, stream=True))
    # what was stored before the cancel, and no terminal event: the job did not write one
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert not {e.type for e in events} & {"response.completed", "response.failed", "response.incomplete"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    full = "".join(f"w{n} " for n in range(200))
    assert full.startswith(text) and text != full


def test_cancel_of_a_finished_background_response_leaves_it(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=1)["id"]
    assert poll(lambda: client.responses.retrieve(rid).status == "completed", timeout=20)
    assert client.responses.cancel(rid).status == "completed"


def test_background_failure_is_stored_and_ends_followers(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=5, delay=0.01, fail_after=3)["id"]
    events = list(client.responses.retrieve(rid, stream=True))
    assert events[-1].type == "response.failed"
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    failed = client.responses.retrieve(rid)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "upstream_error"
    assert failed.error.message == "Upstream fixture broke off."
    assert httpx.get(f"{server.url}/_test/upstream/{rid}").json()["closed"] is True


def test_shutdown_fails_running_jobs_and_ends_followers(tmp_path: Path) -> None:
    spec = f"sqlite:///{tmp_path}/shutdown.db"
    srv = run_app(make_app(spec))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=30)
        rid = start(srv, words=400, delay=0.05)["id"]
        assert poll(lambda: client.responses.retrieve(rid).status == "in_progress", timeout=10)
        seen: list[Any] = []

        def follow() -> None:
            try:
                seen.extend(client.responses.retrieve(rid, stream=True))
            except Exception as exc:  # recorded, and the assertion below names it
                seen.append(exc)

        follower = threading.Thread(target=follow)
        follower.start()
        assert poll(lambda: len(seen) > 3, timeout=10)
    finally:
        srv.stop()
    follower.join(30)
    assert not follower.is_alive()
    last = seen[-1]
    assert getattr(last, "type", repr(last)) == "response.failed"
    assert last.response.error.code == "server_shutting_down"
    with run_app(make_app(spec)) as again:
        reopened = openai.OpenAI(base_url=again.url + "/v1", api_key="x", max_retries=0)
        stored_response = reopened.responses.retrieve(rid)
        assert stored_response.status == "failed" and stored_response.error.code == "server_shutting_down"


def test_background_needs_store(server: Any) -> None:
    r = httpx.post(server.url + "/v1/responses", json={"store": False})
    assert r.status_code == 400 and r.json()["error"]["param"] == "background"


def test_delete_of_a_running_background_response_stops_it(server: Any, client: openai.OpenAI) -> None:
    rid = start(server, words=200, delay=0.05)["id"]
    assert poll(lambda: client.responses.retrieve(rid).status == "in_progress", timeout=10)
    client.responses.delete(rid)
    assert httpx.get(f"{server.url}/_test/upstream/{rid}").json()["closed"] is True
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(rid)


def test_owner_key_matches_the_middleware() -> None:
    from server import middleware

    assert middleware.OWNER_KEY == stored.OWNER_KEY


# --------------------------------------------------------------------- two replicas on PostgreSQL


@pytest.fixture
def pg_spec(postgres_url: str) -> Iterator[str]:  # noqa: F811  (the imported fixture)
    """A PostgreSQL store spec with a schema of its own (the server is started if it is down)."""
    schema = f"rb_api_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield f"{postgres_url}?schema={schema}"
    asyncio.run(_drop_schema(postgres_url, schema))


def test_two_replicas_share_background_responses(pg_spec: str) -> None:
    with run_app(make_app(pg_spec)) as a, run_app(make_app(pg_spec)) as b:
        ca = openai.OpenAI(base_url=a.url + "/v1", api_key="x", max_retries=0)
        cb = openai.OpenAI(base_url=b.url + "/v1", api_key="x", max_retries=0)
        # runs on A, followed and polled on B
        rid = start(a, words=8, delay=0.05)["id"]
        events = list(cb.responses.retrieve(rid, stream=True))
        assert events[-1].type == "response.completed"
        assert cb.responses.retrieve(rid).output_text == "".join(f"w{n} " for n in range(8))
        # runs on A, cancelled on B: A's watcher stops the job and closes its upstream
        rid = start(a, words=400, delay=0.05)["id"]
        assert poll(lambda: cb.responses.retrieve(rid).status == "in_progress", timeout=10)
        assert cb.responses.cancel(rid).status == "cancelled"
        assert poll(lambda: httpx.get(f"{a.url}/_test/upstream/{rid}").json()["closed"], timeout=10)
        assert ca.responses.retrieve(rid).status == "cancelled"


# -------------------------------------------------------------------- through the real bridge (app.py)


def test_bridge_serves_stored_routes_and_survives_a_restart(make_bridge: Any, tmp_path: Path) -> None:
    """The bridge (server/app.py) stores what it answers in SQLite; a new server on the same file
    serves it: retrieve, input items, a chained turn, delete."""
    spec = f"sqlite:///{tmp_path}/bridge.db"
    first_server = make_bridge(store=spec)
    client = openai.OpenAI(base_url=first_server.url, api_key="x", max_retries=0)
    first = client.responses.create(model="fixture-scripted", input="@text stored answer")
    assert client.responses.retrieve(first.id).output_text == "stored answer"
    first_server.stop()

    second_server = make_bridge(store=spec)
    client = openai.OpenAI(base_url=second_server.url, api_key="x", max_retries=0)
    again = client.responses.retrieve(first.id)
    assert again.output_text == "stored answer" and again.status == "completed"
    items = list(client.responses.input_items.list(first.id))
    assert len(items) == 1 and items[0].type == "message" and items[0].content[0].text == "@text stored answer"
    follow = client.responses.create(model="fixture-scripted", input="more", previous_response_id=first.id)
    assert follow.output_text == "Echo: more"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="fixture-scripted", input="x", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found"


def test_bridge_store_false_keeps_nothing(make_bridge: Any) -> None:
    handle = make_bridge(store="memory")
    client = openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0)
    answer = client.responses.create(model="fixture-scripted", input="@text gone", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_two_bridges_on_one_postgres_serve_one_conversation_alternately(
    make_bridge: Any, pg_spec: str, backend_requests: Any, clear_backend_requests: Any
) -> None:
    a = openai.OpenAI(base_url=make_bridge(store=pg_spec).url, api_key="x", max_retries=0)
    b = openai.OpenAI(base_url=make_bridge(store=pg_spec).url, api_key="x", max_retries=0)
    clear_backend_requests()
    turn1 = a.responses.create(model="fixture-scripted", input="@text one", instructions="be brief")
    turn2 = b.responses.create(model="fixture-scripted", input="two", previous_response_id=turn1.id)
    turn3 = a.responses.create(model="fixture-scripted", input="three", previous_response_id=turn2.id)
    assert turn3.output_text == "Echo: three"
    last = backend_requests()[-1]
    contents = [(m["role"], m["content"] if isinstance(m["content"], str) else
                 "".join(p.get("text", "") for p in m["content"])) for m in last["messages"]]  # fmt: skip
    assert contents == [
        ("user", "@text one"), ("assistant", "one"), ("user", "two"), ("assistant", "Echo: two"), ("user", "three"),
    ]  # instructions of turn 1 are not carried over  # fmt: skip
    assert b.responses.retrieve(turn3.id).previous_response_id == turn2.id
    assert [i.id for i in a.responses.input_items.list(turn2.id)] == [
        i.id for i in b.responses.input_items.list(turn2.id)
    ]


def test_bridge_background_poll_stream_from_the_middle_and_cancel(make_bridge: Any) -> None:
    """Background mode through the bridge (app.py → server/background.py) against the fixture backend."""
    client = openai.OpenAI(base_url=make_bridge(store="memory").url, api_key="x", max_retries=0, timeout=30)
    queued = client.responses.create(model="fixture-scripted", input="@text background answer", background=True)
    assert queued.status == "queued" and queued.background is True
    assert poll(lambda: client.responses.retrieve(queued.id).status == "completed", timeout=20)
    assert client.responses.retrieve(queued.id).output_text == "background answer"
    full = list(client.responses.retrieve(queued.id, stream=True))
    assert full[-1].type == "response.completed"
    tail = list(client.responses.retrieve(queued.id, stream=True, starting_after=3))
    assert [e.sequence_number for e in tail] == [e.sequence_number for e in full[4:]]
    # background + stream: the POST itself follows the job
    with client.responses.create(model="fixture-scripted", input="@text live", background=True, stream=True) as s:
        streamed = list(s)
    assert streamed[-1].type == "response.completed" and streamed[-1].response.output_text == "live"
    # a stalled backend: cancel stops the job
    stalled = client.responses.create(model="chaos:stall", input="x", background=True)
    assert poll(lambda: client.responses.retrieve(stalled.id).status == "in_progress", timeout=10)
    assert client.responses.cancel(stalled.id).status == "cancelled"
    assert client.responses.retrieve(stalled.id).status == "cancelled"
    # a backend error ends the job as failed, with the error stored
    refused = client.responses.create(model="chaos:status-503", input="x", background=True)
    assert poll(lambda: client.responses.retrieve(refused.id).status == "failed", timeout=10)
    assert client.responses.retrieve(refused.id).error.code


def test_bridge_background_without_store_is_400(make_bridge: Any) -> None:
    client = openai.OpenAI(base_url=make_bridge(store="memory").url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fixture-scripted", input="x", background=True, store=False)
    client = openai.OpenAI(base_url=make_bridge(store="none").url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fixture-scripted", input="x", background=True)


def test_two_bridges_on_postgres_share_a_background_job(make_bridge: Any, pg_spec: str) -> None:
    a = openai.OpenAI(base_url=make_bridge(store=pg_spec).url, api_key="x", max_retries=0, timeout=30)
    b = openai.OpenAI(base_url=make_bridge(store=pg_spec).url, api_key="x", max_retries=0, timeout=30)
    job = a.responses.create(model="fixture-scripted", input="@text shared job", background=True)
    events = list(b.responses.retrieve(job.id, stream=True))
    assert events[-1].type == "response.completed"
    assert b.responses.retrieve(job.id).output_text == "shared job"
    stalled = a.responses.create(model="chaos:stall", input="x", background=True)
    assert poll(lambda: b.responses.retrieve(stalled.id).status == "in_progress", timeout=10)
    assert b.responses.cancel(stalled.id).status == "cancelled"
    assert a.responses.retrieve(stalled.id).status == "cancelled"


def _serve(tmp_path: Path, spec: str) -> tuple[subprocess.Popen[bytes], str]:
    """`responses-bridge serve` in a process of its own (so it can be killed with SIGKILL)."""
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "wb")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--upstream", "fixtures", "--store", spec, "--port", str(port),
         "--api-key", "key-one", "--api-key", "key-two"],
        cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    root = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / f"serve-{port}.log").read_text())
        try:
            return httpx.get(root + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert poll(ready, timeout=30)
    return proc, root + "/v1"


def test_served_bridge_keeps_responses_after_kill_9(tmp_path: Path) -> None:
    spec = f"sqlite:///{tmp_path}/killed.db"
    proc, url = _serve(tmp_path, spec)
    try:
        one = openai.OpenAI(base_url=url, api_key="key-one", max_retries=0)
        two = openai.OpenAI(base_url=url, api_key="key-two", max_retries=0)
        first = one.responses.create(model="fixture-scripted", input="@text kept")
        with pytest.raises(openai.NotFoundError):
            two.responses.retrieve(first.id)  # another key's response is invisible
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    proc, url = _serve(tmp_path, spec)
    try:
        one = openai.OpenAI(base_url=url, api_key="key-one", max_retries=0)
        two = openai.OpenAI(base_url=url, api_key="key-two", max_retries=0)
        assert one.responses.retrieve(first.id).output_text == "kept"
        follow = one.responses.create(model="fixture-scripted", input="next", previous_response_id=first.id)
        assert follow.output_text == "Echo: next"
        with pytest.raises(openai.NotFoundError) as info:
            two.responses.create(model="fixture-scripted", input="x", previous_response_id=first.id)
        assert info.value.code == "previous_response_not_found"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
