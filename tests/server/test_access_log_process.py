"""One access line per request from a real `responses-bridge serve` process: the bridge's own
(`responses_bridge.access`), with uvicorn's access logger silenced so no request is logged twice, in
text and JSON and with several workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.server.test_server_cli import CLEAN_EXIT, Process

MODEL = "fixture-scripted"


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Process] = []

    def factory(args: list[str]) -> Process:
        process = Process(args)
        started.append(process)
        process.wait_ready()  # polls /healthz, which has no access line
        return process

    yield factory
    for process in started:
        if process.proc.poll() is None:
            process.stop()


def _three_requests(bridge: Process) -> None:
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)
    assert client.responses.create(model=MODEL, input="@text one").output_text == "one"
    with client.responses.stream(model=MODEL, input="@text two") as stream:
        assert stream.get_final_response().output_text == "two"
    assert httpx.get(bridge.url + "/models", timeout=10).status_code == 200


def _uvicorn_access_lines(err: str) -> list[str]:
    """uvicorn's own access format: `127.0.0.1:PORT - "POST /v1/responses HTTP/1.1" 200`."""
    return [line for line in err.splitlines() if " HTTP/1.1\"" in line or "uvicorn.access" in line]


@pytest.mark.parametrize("workers", [1, 2])
def test_three_requests_give_three_text_access_lines(serve: Any, workers: int) -> None:
    bridge = serve(["--upstream", "fixtures", "--store", "none", "--workers", str(workers)])
    _three_requests(bridge)
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    access = [line.split("responses_bridge.access: ", 1)[1] for line in err.splitlines()
              if "responses_bridge.access: " in line]  # fmt: skip
    assert [" ".join(line.split()[:3]) for line in access] == [
        "POST /v1/responses 200", "POST /v1/responses 200", "GET /v1/models 200",
    ], err  # fmt: skip
    assert "stream=false" in access[0] and "stream=true" in access[1]
    assert _uvicorn_access_lines(err) == [], err


def test_three_requests_give_three_json_access_records(serve: Any) -> None:
    bridge = serve(["--upstream", "fixtures", "--store", "none", "--log-format", "json"])
    _three_requests(bridge)
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    records = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("event") == "access"]
    assert [(r["method"], r["path"], r["status"]) for r in access] == [
        ("POST", "/v1/responses", 200), ("POST", "/v1/responses", 200), ("GET", "/v1/models", 200),
    ], err  # fmt: skip
    assert [r for r in records if r.get("logger") == "uvicorn.access"] == []
    assert _uvicorn_access_lines(err) == [], err
