"""Security: API keys checked in constant time, nothing secret in logs, an upstream key never
echoed to a client, backend headers not passed on, and stored responses scoped to the key that made them.

The leak tests use a backend built here (`EchoBackend`) that does the worst a real backend does: it
puts the `Authorization` header it received into its error messages, its error bodies, a mid-stream
error chunk and its own response headers. The logging test runs the bridge as a process with its
output captured at the default level.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import BridgeHandle
from tests.server.test_reliability_client import BridgeProcess
from tests.server.test_server_stream import assert_well_ended, parse_frames
from tests.support.assertions import assert_openai_error
from tests.support.servers import RunningServer, run_app

pytestmark = pytest.mark.timeout(120)

KEY_A = "sk-client-AAAA-" + uuid.uuid4().hex
KEY_B = "sk-client-BBBB-" + uuid.uuid4().hex
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex
ENCRYPTION_KEY = "enc-" + uuid.uuid4().hex


# ------------------------------------------------------------------------------------------- auth


@pytest.fixture
def keyed_bridge(make_bridge: Callable[..., BridgeHandle]) -> BridgeHandle:
    return make_bridge(api_keys=(KEY_A, KEY_B), store="memory")


BAD_CREDENTIALS: dict[str, dict[str, str | bytes]] = {
    "missing": {},
    "wrong": {"authorization": "Bearer sk-not-the-key"},
    "prefix": {"authorization": f"Bearer {KEY_A[:-1]}"},
    "suffix": {"authorization": f"Bearer {KEY_A}x"},
    "case": {"authorization": f"Bearer {KEY_A.upper()}"},
    "empty-bearer": {"authorization": "Bearer"},
    "basic": {"authorization": "Basic " + KEY_A},
    "bare-key": {"authorization": KEY_A},
    "x-api-key-wrong": {"x-api-key": "nope"},
    "non-ascii": {"authorization": "Bearer sk-\u00e9\u00e9".encode("latin-1")},
    "non-ascii-x-api-key": {"x-api-key": b"\xff\xfe" + KEY_A.encode()},
    "both-wrong": {"authorization": "Bearer nope", "x-api-key": "nope"},
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_wrong_or_missing_key_is_401(keyed_bridge: BridgeHandle, case: str) -> None:
    headers = BAD_CREDENTIALS[case]
    body = {"model": "fixture-scripted", "input": "hi"}
    for method, path in (("POST", "/responses"), ("GET", "/models"), ("GET", "/responses/resp_x")):
        response = httpx.request(
            method,
            keyed_bridge.url + path,
            json=body if method == "POST" else None,
            headers=headers,
            timeout=10,
        )
        error = assert_openai_error(response, 401)
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key", error
        for value in headers.values():
            token = (value.decode("latin-1") if isinstance(value, bytes) else value).split(" ", 1)[-1]
            if len(token) > 3 and token != "Bearer":
                assert token not in response.text, "the presented key is not echoed"


def test_right_key_by_bearer_or_x_api_key(keyed_bridge: BridgeHandle) -> None:
    body = {"model": "fixture-scripted", "input": "@text let in"}
    for headers in (
        {"authorization": f"Bearer {KEY_A}"},
        {"x-api-key": KEY_B},
        {"authorization": f"bearer {KEY_B}"},
    ):
        response = httpx.post(keyed_bridge.url + "/responses", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, (headers, response.text[:300])
    assert httpx.get(keyed_bridge.root + "/healthz", timeout=10).status_code == 200, "health stays open"


def test_sdk_with_wrong_key_gets_authentication_error(keyed_bridge: BridgeHandle) -> None:
    client = openai.OpenAI(base_url=keyed_bridge.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.responses.create(model="fixture-scripted", input="hi")
    assert info.value.status_code == 401
    ok = openai.OpenAI(base_url=keyed_bridge.url, api_key=KEY_A, max_retries=0)
    assert ok.responses.create(model="fixture-scripted", input="@text fine").output_text == "fine"


def test_keys_compared_in_constant_time() -> None:
    """Source check (alongside the behaviour above): the key check goes through
    `hmac.compare_digest`/`secrets.compare_digest`, compares against every key, and has no `==`, `!=`
    or `in` on the presented key, which would return early on the first differing byte."""
    from server import auth

    source = textwrap.dedent(inspect.getsource(auth.check_key))
    tree = ast.parse(source)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = {getattr(c.func, "attr", getattr(c.func, "id", None)) for c in calls}
    assert "compare_digest" in names, source
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators, strict=True):
                is_none_check = isinstance(op, ast.Is | ast.IsNot) and isinstance(right, ast.Constant)
                assert is_none_check, f"non-constant-time comparison: {ast.unparse(node)}"
    assert not any(isinstance(node, ast.Return) and node is not tree.body[0].body[-1] and
                   isinstance(node.value, ast.Constant) and node.value.value is True
                   for node in ast.walk(tree)), "no early return on the first matching key"  # fmt: skip
    # behaviour of the function itself
    assert auth.check_key(KEY_A, (KEY_A, KEY_B)) and auth.check_key(KEY_B, (KEY_A, KEY_B))
    assert not auth.check_key(KEY_A[:-1], (KEY_A,)) and not auth.check_key(None, (KEY_A,))
    assert not auth.check_key("", (KEY_A,)) and not auth.check_key(KEY_A, ())
    # and the middleware really uses it
    from server import app

    assert "check_key(" in inspect.getsource(app.BridgeMiddleware)


# ------------------------------------------------------------------------------------ echo backend


class EchoBackend:
    """A backend that leaks whatever it is sent: the model name picks the misbehaviour."""

    def __init__(self) -> None:
        self.seen_auth: list[str] = []
        self.seen_headers: list[dict[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "echo-model", "object": "model", "created": 1, "owned_by": auth}],
            },
            headers={"x-echo-authorization": auth},
        )

    async def chat(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        self.seen_auth.append(auth)
        self.seen_headers.append(dict(request.headers))
        body = orjson.loads(await request.body())
        model = body.get("model", "")
        leaky = {"x-echo-authorization": auth, "set-cookie": f"session={auth}", "x-backend-internal": "42"}
        dump = "; ".join(f"{k}={v}" for k, v in request.headers.items())
        if model == "echo-401":
            message = f"Incorrect API key provided: {auth}. Headers were: {dump}"
            error = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                               "code": "invalid_api_key"}}  # fmt: skip
            return JSONResponse(error, status_code=401, headers=leaky)
        if model == "echo-400":
            error = {"error": {"message": f"bad request, you sent {dump}", "type": "invalid_request_error",
                               "param": auth, "code": auth}}  # fmt: skip
            return JSONResponse(error, status_code=400, headers=leaky)
        if model == "echo-429":
            error = {
                "error": {"message": f"slow down {auth}", "type": "requests", "param": None, "code": None}
            }
            return JSONResponse(error, status_code=429, headers={**leaky, "retry-after": "3"})
        if model == "echo-500-text":
            return PlainTextResponse(
                f"upstream crashed; request headers: {dump}", status_code=500, headers=leaky
            )
        if model == "echo-detail":
            return JSONResponse({"detail": f"FastAPI says no to {auth}"}, status_code=422, headers=leaky)
        if model == "echo-200-error":
            return JSONResponse({"error": {"message": f"key {auth} over quota"}}, headers=leaky)
        if model == "echo-stream-error":

            async def chunks() -> Any:
                role = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                     "finish_reason": None}]}  # fmt: skip
                yield b"data: " + orjson.dumps(role) + b"\n\n"
                yield b"data: " + orjson.dumps(
                    {"error": {"message": f"stream broke, key {auth}", "code": auth}}
                )
                yield b"\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream", headers=leaky)
        completion = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "fine"}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip
        if body.get("stream"):

            async def ok_chunks() -> Any:
                chunk = {**completion, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "fine"},
                                      "finish_reason": "stop"}]}  # fmt: skip
                yield b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"

            return StreamingResponse(ok_chunks(), media_type="text/event-stream", headers=leaky)
        return JSONResponse(completion, headers=leaky)


@pytest.fixture(scope="module")
def echo_backend() -> Iterator[tuple[EchoBackend, RunningServer]]:
    backend = EchoBackend()
    with run_app(backend.app) as running:
        yield backend, running


ECHO_MODELS = ["echo-401", "echo-400", "echo-429", "echo-500-text", "echo-detail", "echo-200-error",
               "echo-stream-error", "echo-ok"]  # fmt: skip
#: model → {stream: (HTTP status, error code of the stream's response.failed or None for completed)}.
#: A backend's 4xx is passed on with its status; its 5xx or a body that is not an answer is a 502; a
#: stream request answered with a JSON error body, or an error chunk mid-stream, is a failed stream.
ECHO_OUTCOMES: dict[str, dict[bool, tuple[int, str | None]]] = {
    "echo-401": {False: (401, None), True: (401, None)},
    "echo-400": {False: (400, None), True: (400, None)},
    "echo-429": {False: (429, None), True: (429, None)},
    "echo-500-text": {False: (502, None), True: (502, None)},
    "echo-detail": {False: (422, None), True: (422, None)},
    "echo-200-error": {False: (502, None), True: (200, "server_error")},
    "echo-stream-error": {False: (502, None), True: (200, "server_error")},  # SSE answering a whole request
    "echo-ok": {False: (200, None), True: (200, None)},
}


def assert_no_leak(response: httpx.Response) -> None:
    """Neither the key nor the backend's own headers reach the client: body and every header checked."""
    assert UPSTREAM_KEY not in response.text, response.text[:500]
    assert UPSTREAM_KEY[-12:] not in response.text, "not even a fragment of the key"
    for name, value in response.headers.items():
        assert UPSTREAM_KEY not in value, (name, value)
        assert name.lower() not in ("x-echo-authorization", "set-cookie", "x-backend-internal"), name


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ECHO_MODELS)
def test_upstream_key_never_reaches_the_client(
    make_bridge: Callable[..., BridgeHandle], echo_backend: tuple[EchoBackend, RunningServer], model: str,
    stream: bool,
) -> None:  # fmt: skip
    backend, server = echo_backend
    handle = make_bridge(upstream={"base_url": server.url + "/v1", "api_key": UPSTREAM_KEY}, store="none")
    response = httpx.post(handle.url + "/responses", json={"model": model, "input": "hi", "stream": stream},
                          timeout=30)  # fmt: skip
    assert backend.seen_auth[-1] == f"Bearer {UPSTREAM_KEY}", "the backend did get the key"
    assert_no_leak(response)
    status, failed_code = ECHO_OUTCOMES[model][stream]
    if status != 200:
        error = assert_openai_error(response, status)
        assert error["message"], "the backend's message is passed on (scrubbed)"
        if model == "echo-429":
            assert response.headers.get("retry-after") == "3"
        return
    assert response.status_code == 200, response.text[:300]
    if not stream:
        assert response.json()["status"] == "completed"
        return
    terminal = assert_well_ended(parse_frames(response.content))
    if failed_code is None:
        assert terminal["type"] == "response.completed", terminal
    else:
        assert terminal["type"] == "response.failed" and terminal["response"]["error"]["code"] == failed_code


def test_upstream_key_not_in_model_list(
    make_bridge: Callable[..., BridgeHandle], echo_backend: tuple[EchoBackend, RunningServer]
) -> None:
    _, server = echo_backend
    handle = make_bridge(upstream={"base_url": server.url + "/v1", "api_key": UPSTREAM_KEY}, store="none")
    response = httpx.get(handle.url + "/models", timeout=30)
    assert response.status_code == 200
    assert any(m["id"] == "echo-model" for m in response.json()["data"])
    assert_no_leak(response)


# ------------------------------------------------------------------------------------------- logs


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_nothing_secret_in_logs(backend_url: str, log_format: str) -> None:
    """The bridge as a process at the default log level, fed keys, auth headers and bodies holding a
    unique marker, across successes, auth failures, bad requests and backend faults: the captured
    output holds none of them (and is not empty: the access log is there)."""
    marker = "MARKER-" + uuid.uuid4().hex
    args = ("--upstream", backend_url, "--upstream-key", UPSTREAM_KEY, "--api-key", KEY_A, "--api-key", KEY_B,
            "--store", "memory", "--log-format", log_format, "--encryption-key", ENCRYPTION_KEY)  # fmt: skip
    with BridgeProcess(*args) as bridge:
        good = {"authorization": f"Bearer {KEY_A}"}
        sent = 0

        def post(body: Any, headers: dict[str, str], raw: bytes | None = None) -> httpx.Response:
            nonlocal sent
            sent += 1
            content = raw if raw is not None else orjson.dumps(body)
            return httpx.post(bridge.url + "/responses", content=content,
                              headers={"content-type": "application/json", **headers}, timeout=30)  # fmt: skip

        assert post({"model": "fixture-scripted", "input": f"@text {marker}"}, good).status_code == 200
        streamed = post({"model": "fixture-scripted", "input": f"@text {marker}", "stream": True}, good)
        assert streamed.status_code == 200
        assert post({"model": "fixture-scripted", "input": marker}, {"x-api-key": KEY_B}).status_code == 200
        assert (
            post(
                {"model": "fixture-scripted", "input": marker}, {"authorization": f"Bearer {marker}"}
            ).status_code
            == 401
        )
        assert post({"model": "fixture-scripted", "input": marker}, {}).status_code == 401
        assert post(None, good, raw=f'{{"model": "{marker}", "input": '.encode()).status_code == 400
        bad_format = {"model": "fixture-scripted", "input": "hi", "text": {"format": {"type": marker}}}
        assert post(bad_format, good).status_code == 400
        bad_item = {
            "model": "fixture-scripted",
            "input": [{"type": "function_call_output", "output": marker}],
        }
        assert post(bad_item, good).status_code == 400
        for fault in (
            "status-400",
            "status-401",
            "status-500",
            "midstream-error",
            "cut",
            "malformed",
            "refuse",
        ):
            for stream in (False, True):
                post({"model": f"chaos:{fault}", "input": marker, "stream": stream}, good)
        assert (
            post(
                {"model": "fixture-scripted", "input": marker, "previous_response_id": marker}, good
            ).status_code
            == 404
        )
        httpx.get(bridge.url + "/models", headers={"authorization": f"Bearer {KEY_A}"}, timeout=30)
        bridge.stop()
        logs = bridge.logs()
    assert logs.strip(), "the bridge logged nothing at all (no access log?)"
    assert len([line for line in logs.splitlines() if "/v1/responses" in line]) >= sent // 2, logs[-2000:]
    for secret, what in ((KEY_A, "client key A"), (KEY_B, "client key B"), (UPSTREAM_KEY, "upstream key"), (ENCRYPTION_KEY, "encryption key"),
                         (marker, "request body"), ("Bearer", "Authorization header")):  # fmt: skip
        assert secret not in logs, (
            f"{what} found in the logs:\n"
            + "\n".join(line for line in logs.splitlines() if secret in line)[:2000]
        )
    assert "authorization" not in logs.lower(), "no header dump in the logs"


# ---------------------------------------------------------------------------------- store scoping


def test_stored_responses_scoped_to_their_key(keyed_bridge: BridgeHandle) -> None:
    """A response created with key A is invisible with key B: retrieve, input items, delete and
    continuing from it all answer 404 for B; A still sees it afterwards."""
    a = {"authorization": f"Bearer {KEY_A}"}
    b = {"authorization": f"Bearer {KEY_B}"}
    url = keyed_bridge.url
    created = httpx.post(url + "/responses", json={"model": "fixture-scripted", "input": "@text mine"}, headers=a,
                         timeout=30)  # fmt: skip
    assert created.status_code == 200, created.text
    rid = created.json()["id"]

    error = assert_openai_error(httpx.get(f"{url}/responses/{rid}", headers=b, timeout=10), 404)
    assert error == {"message": f"No response found with id '{rid}'.", "type": "invalid_request_error",
                     "param": "response_id", "code": "not_found"}
    assert_openai_error(httpx.get(f"{url}/responses/{rid}/input_items", headers=b, timeout=10), 404)
    assert_openai_error(httpx.delete(f"{url}/responses/{rid}", headers=b, timeout=10), 404)
    follow = {"model": "fixture-scripted", "input": "and then?", "previous_response_id": rid}
    error = assert_openai_error(httpx.post(url + "/responses", json=follow, headers=b, timeout=30), 404)
    assert error["code"] == "previous_response_not_found" and error["param"] == "previous_response_id", error

    mine = httpx.get(f"{url}/responses/{rid}", headers=a, timeout=10)
    assert mine.status_code == 200, mine.text[:300]
    assert mine.json()["id"] == rid and mine.json()["output"][0]["content"][0]["text"] == "mine"
    assert httpx.post(url + "/responses", json=follow, headers=a, timeout=30).status_code == 200


def test_upstream_url_credentials_not_logged(backend_url: str) -> None:
    """Some deployments put credentials in the upstream URL (`http://user:password@host/v1`); the
    startup and access logs name the upstream without them."""
    password = "pw-" + uuid.uuid4().hex
    url = backend_url.replace("http://", f"http://bridge-user:{password}@")
    with BridgeProcess("--upstream", url, "--store", "none") as bridge:
        response = httpx.post(bridge.url + "/responses", json={"model": "fixture-scripted", "input": "@text ok"},
                              timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text[:300]
        failing = httpx.post(
            bridge.url + "/responses", json={"model": "chaos:status-500", "input": "x"}, timeout=30
        )
        assert password not in failing.text
        bridge.stop()
        logs = bridge.logs()
    assert logs.strip()
    assert password not in logs, "\n".join(line for line in logs.splitlines() if password in line)


def test_client_key_not_forwarded_to_the_backend(
    make_bridge: Callable[..., BridgeHandle], echo_backend: tuple[EchoBackend, RunningServer]
) -> None:
    """The key a client shows the bridge is the bridge's business: with an upstream key configured,
    the backend sees that key only, never the client's (by `Authorization` or `x-api-key`)."""
    backend, server = echo_backend
    handle = make_bridge(api_keys=(KEY_A,), store="none",
                         upstream={"base_url": server.url + "/v1", "api_key": UPSTREAM_KEY})  # fmt: skip
    for headers in ({"authorization": f"Bearer {KEY_A}"}, {"x-api-key": KEY_A}):
        before = len(backend.seen_headers)
        response = httpx.post(handle.url + "/responses", json={"model": "echo-ok", "input": "hi"}, headers=headers,
                              timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text[:300]
        (seen,) = backend.seen_headers[before:]
        assert seen.get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert not any(KEY_A in value for value in seen.values()), seen


def test_passthrough_key_not_logged(echo_backend: tuple[EchoBackend, RunningServer]) -> None:
    """`--upstream-key passthrough` forwards the caller's key to the backend (that is its purpose)
    but never writes it to the logs, even when the backend echoes it in an error."""
    backend, server = echo_backend
    with BridgeProcess(
        "--upstream", server.url + "/v1", "--upstream-key", "passthrough", "--store", "none"
    ) as bridge:
        for model in ("echo-ok", "echo-401", "echo-500-text", "echo-stream-error"):
            httpx.post(bridge.url + "/responses", json={"model": model, "input": "hi", "stream": model.endswith("error")},
                       headers={"authorization": f"Bearer {KEY_B}"}, timeout=30)  # fmt: skip
        assert backend.seen_auth[-1] == f"Bearer {KEY_B}", "passthrough forwards the caller's key"
        bridge.stop()
        logs = bridge.logs()
    assert logs.strip()
    assert KEY_B not in logs, "\n".join(line for line in logs.splitlines() if KEY_B in line)
