"""The bridge's HTTP surface against a real uvicorn server: health, models, auth and every error path
(docs/wire.md §1.9: errors are `{"error": {message, type, param, code}}` with the right status)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import BridgeHandle
from tests.support.assertions import assert_openai_error


def _post(url: str, body: Any = None, *, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/responses", json=body, content=content, timeout=30, **kwargs)


def test_healthz(bridge: BridgeHandle) -> None:
    response = httpx.get(bridge.root + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_models_lists_backend_models_as_supporting_responses(bridge_url: str) -> None:
    client = openai.OpenAI(base_url=bridge_url, api_key="x", max_retries=0)
    models = client.models.list().data
    assert models, "the fixture backend lists models; the bridge must pass them on"
    for model in models:
        assert model.object == "model"
        assert (model.model_extra or {}).get("supported_endpoints") == ["/v1/responses"]


def test_models_with_configured_names_and_aliases(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(upstream={"models": ("fixture-scripted",), "aliases": {"gpt-5": "fixture-scripted"}})
    data = httpx.get(handle.url + "/models", timeout=10).json()["data"]
    by_id = {m["id"]: m for m in data}
    assert set(by_id) == {"fixture-scripted", "gpt-5"}
    assert by_id["gpt-5"]["alias_of"] == "fixture-scripted"
    assert all(m["supported_endpoints"] == ["/v1/responses"] for m in data)


def test_alias_routes_to_backend_model(
    make_bridge: Callable[..., BridgeHandle], backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    handle = make_bridge(upstream={"aliases": {"my-alias": "fixture-scripted-aliased"}})
    response = _post(handle.url, {"model": "my-alias", "input": "@text aliased ok"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "my-alias"
    assert body["output"][0]["content"][0]["text"] == "aliased ok"
    assert any(r.get("model") == "fixture-scripted-aliased" for r in backend_requests())


def test_unknown_model_is_404_model_not_found(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(upstream={"models": ("fixture-scripted",)})
    response = _post(handle.url, {"model": "no-such-model", "input": "hi"})
    error = assert_openai_error(response, 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


def test_auth_required_when_keys_configured(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(api_keys=("sk-good-key-1", "sk-good-key-2"))
    request = {"model": "fixture-scripted", "input": "@text authed"}
    missing = _post(handle.url, request)
    assert assert_openai_error(missing, 401)["type"] == "authentication_error"
    wrong = _post(handle.url, request, headers={"authorization": "Bearer sk-wrong"})
    assert_openai_error(wrong, 401)
    assert "sk-wrong" not in wrong.text and "sk-good" not in wrong.text
    bearer = _post(handle.url, request, headers={"authorization": "Bearer sk-good-key-2"})
    assert bearer.status_code == 200, bearer.text
    x_api_key = _post(handle.url, request, headers={"x-api-key": "sk-good-key-1"})
    assert x_api_key.status_code == 200, x_api_key.text
    # the SDK sends its key as a bearer token
    client = openai.OpenAI(base_url=handle.url, api_key="sk-good-key-1", max_retries=0)
    assert client.responses.create(model="fixture-scripted", input="@text sdk").output_text == "sdk"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=handle.url, api_key="nope", max_retries=0).responses.create(
            model="fixture-scripted", input="hi"
        )
    # health stays open for load balancers
    assert httpx.get(handle.root + "/healthz", timeout=10).status_code == 200


def test_body_too_large_is_413(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(max_body_bytes=1024)
    response = _post(handle.url, {"model": "fixture-scripted", "input": "x" * 4096})
    assert assert_openai_error(response, 413)["code"] == "request_too_large"
    # chunked upload without content-length is counted too
    chunks = (b'{"model":"fixture-scripted","input":"' + b"y" * 512 for _ in range(4))
    response = httpx.post(handle.url + "/responses", content=chunks, timeout=30)
    assert_openai_error(response, 413)


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"model": "x", "input": "a"', b"\xff\xfe"])
def test_malformed_json_is_400(bridge_url: str, content: bytes) -> None:
    response = _post(bridge_url, content=content, headers={"content-type": "application/json"})
    assert assert_openai_error(response, 400)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2, 3], None),
        ("a string", None),
        ({"input": "hi"}, "model"),
        ({"model": 42, "input": "hi"}, "model"),
        ({"model": "fixture-scripted", "input": "hi", "stream": "yes"}, "stream"),
    ],
)
def test_invalid_request_is_400_naming_param(bridge_url: str, body: Any, param: str | None) -> None:
    response = _post(bridge_url, body)
    error = assert_openai_error(response, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_translator_invalid_request_names_param(bridge_url: str) -> None:
    """Per-field checks are the translator's InvalidRequest; the server passes its param through."""
    response = _post(bridge_url, {"model": "fixture-scripted", "input": [{"type": "no_such_item_type"}]})
    error = assert_openai_error(response, 400)
    assert error["param"] is not None and error["param"].startswith("input")


def test_unknown_route_is_openai_shaped_404(bridge: BridgeHandle) -> None:
    response = httpx.get(bridge.root + "/v1/nothing-here", timeout=10)
    assert_openai_error(response, 404)


# ------------------------------------------------------------------------------ backend failures

BACKEND_STATUS = [(400, 400), (401, 401), (403, 403), (404, 404), (422, 422), (429, 429),
                  (500, 502), (502, 502), (503, 502), (504, 504)]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("backend_status", "client_status"), BACKEND_STATUS)
def test_backend_status_maps(bridge_url: str, backend_status: int, client_status: int, stream: bool) -> None:
    response = _post(bridge_url, {"model": f"chaos:status-{backend_status}", "input": "hi", "stream": stream})
    assert response.headers["content-type"].startswith("application/json")
    error = assert_openai_error(response, client_status)
    if backend_status < 500:
        assert error["message"].startswith("Chaos:"), "the backend's own message is passed through"
    if backend_status == 429:
        assert response.headers.get("retry-after") == "7"


def test_backend_status_without_body(bridge_url: str) -> None:
    response = _post(bridge_url, {"model": "chaos:status-503-nobody", "input": "hi", "stream": True})
    assert assert_openai_error(response, 502)["type"] == "server_error"


def test_sdk_sees_rate_limit(bridge_url: str) -> None:
    client = openai.OpenAI(base_url=bridge_url, api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model="chaos:status-429", input="hi")
    assert info.value.response.headers.get("retry-after") == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_backend_refusing_is_502(bridge_url: str, stream: bool) -> None:
    response = _post(bridge_url, {"model": "chaos:refuse", "input": "hi", "stream": stream})
    assert assert_openai_error(response, 502)["type"] == "server_error"


def test_backend_not_listening_is_502(make_bridge: Callable[..., BridgeHandle]) -> None:
    from fixtures.chaos import closed_port_url

    handle = make_bridge(upstream={"base_url": closed_port_url()})
    response = _post(handle.url, {"model": "any", "input": "hi", "stream": True})
    assert assert_openai_error(response, 502)["code"] == "upstream_unavailable"


@pytest.mark.parametrize("stream", [False, True])
def test_backend_hanging_is_504(make_bridge: Callable[..., BridgeHandle], stream: bool) -> None:
    from server.config import Timeouts

    handle = make_bridge(timeouts=Timeouts(connect=5, first_byte=0.5, idle=0.5))
    response = _post(handle.url, {"model": "chaos:hang", "input": "hi", "stream": stream})
    assert assert_openai_error(response, 504)["code"] == "upstream_timeout"


def test_backend_html_page_is_not_a_500(bridge_url: str) -> None:
    response = _post(bridge_url, {"model": "chaos:html", "input": "hi"})
    assert assert_openai_error(response, 502)["type"] == "server_error"


def test_upstream_key_never_leaks(
    make_bridge: Callable[..., BridgeHandle], backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    secret = "sk-upstream-secret-123456"
    handle = make_bridge(upstream={"api_key": secret})
    for model in ("chaos:status-401", "chaos:status-500", "chaos:refuse"):
        response = _post(handle.url, {"model": model, "input": "hi"})
        assert secret not in response.text
    ok = _post(handle.url, {"model": "fixture-scripted", "input": "@text hi"})
    assert ok.status_code == 200 and secret not in ok.text


def test_retrieve_model(bridge_url: str, make_bridge: Callable[..., BridgeHandle]) -> None:
    client = openai.OpenAI(base_url=bridge_url, api_key="x", max_retries=0)
    model = client.models.retrieve("fixture-scripted")
    assert model.id == "fixture-scripted"
    handle = make_bridge(upstream={"models": ("fixture-scripted",)})
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0).models.retrieve("not-served")


def test_internal_error_is_generic_500(make_bridge: Callable[..., BridgeHandle]) -> None:
    """A bug inside the bridge gives an OpenAI-shaped 500 with a generic message, never a traceback."""
    handle = make_bridge()
    client = handle.app.state.bridge.clients["fixture"]

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom with internal detail")

    client.complete = explode
    response = _post(handle.url, {"model": "fixture-scripted", "input": "hi"})
    error = assert_openai_error(response, 500)
    assert error["type"] == "server_error"
    assert "boom" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [("store", "yes", "store"), ("metadata", ["a"], "metadata"), ("metadata", {"k": 1}, "metadata.k"),
     ("include", [1], "include[0]"), ("max_tool_calls", True, "max_tool_calls"), ("temperature", "hot", "temperature"),
     ("background", 1, "background"), ("stream_options", "x", "stream_options")],
)  # fmt: skip
def test_wrong_top_level_types_name_the_param(bridge_url: str, field: str, value: Any, param: str) -> None:
    response = _post(bridge_url, {"model": "fixture-scripted", "input": "hi", field: value})
    assert assert_openai_error(response, 400)["param"] == param


def test_null_fields_are_absent(bridge_url: str) -> None:
    body = {"model": "fixture-scripted", "input": "@text nulls ok", "store": None, "metadata": None,
            "temperature": None, "stream": None}  # fmt: skip
    response = _post(bridge_url, body)
    assert response.status_code == 200, response.text


def test_stalled_request_body_is_408(make_bridge: Callable[..., BridgeHandle]) -> None:
    import socket

    from server.config import Timeouts

    handle = make_bridge(timeouts=Timeouts(connect=2, first_byte=10, idle=0.5))
    port = int(handle.root.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")  # fmt: skip
        data = b""
        while b"}}" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408", head
    assert orjson.loads(body)["error"]["code"] == "request_timeout"


def test_non_streaming_disconnect_cancels_upstream(make_bridge: Callable[..., BridgeHandle]) -> None:
    from fixtures.backend import create_app
    from tests.server.test_server_stream import CountingApp
    from tests.support.servers import poll, run_app

    counter = CountingApp(create_app())
    with run_app(counter) as backend:
        handle = make_bridge(upstream={"base_url": backend.url + "/v1"})
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(handle.url + "/responses", json={"model": "chaos:hang", "input": "hi"}, timeout=1.0)
        assert poll(lambda: counter.finished == 1 and counter.active == 0, timeout=5), vars(counter)
