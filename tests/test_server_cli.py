"""`responses-bridge serve` / `python -m server serve` as a real process: the README's first command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
# uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, so the exit status is -15.
CLEAN_EXIT = (0, -signal.SIGTERM)


class Process:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
        full_env.update(env or {})
        full_env["RESPONSES_BRIDGE_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + "/v1"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited early: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                if httpx.get(self.root + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the bridge did not become healthy")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode("utf-8", "replace")


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[Process] = []

    def factory(args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(args, env)
        started.append(process)
        process.wait_ready()
        return process

    yield factory
    for process in started:
        if process.proc.poll() is None:
            process.stop()


def test_serve_fixtures_upstream_end_to_end(spawn: Any) -> None:
    bridge = spawn(["--upstream", "fixtures", "--store", "none"])
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)
    assert client.responses.create(model="fixture-scripted", input="@text hi from the CLI").output_text == (
        "hi from the CLI"
    )
    with client.responses.stream(model="fixture-scripted", input="@text streamed") as stream:
        assert stream.get_final_response().output_text == "streamed"
    assert any(m.id == "fixture-scripted" for m in client.models.list().data)
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    access = [line for line in err.splitlines() if "POST /v1/responses 200" in line]
    assert len(access) == 2, err
    assert "model=fixture-scripted" in access[0] and "upstream=default" in access[0]
    assert "tokens_out=" in access[0] and "tokens_out=-" not in access[0]


def test_env_vars_and_json_logs(spawn: Any) -> None:
    env = {
        "RESPONSES_BRIDGE_UPSTREAM": "fixtures",
        "RESPONSES_BRIDGE_API_KEY": "sk-env-one,sk-env-two",
        "RESPONSES_BRIDGE_LOG_FORMAT": "json",
        "RESPONSES_BRIDGE_STORE": "none",
    }
    bridge = spawn([], env)
    denied = httpx.post(bridge.url + "/responses", json={"model": "m", "input": "hi"}, timeout=10)
    assert denied.status_code == 401
    client = openai.OpenAI(base_url=bridge.url, api_key="sk-env-two", max_retries=0, timeout=30)
    assert client.responses.create(model="fixture-scripted", input="@text ok").output_text == "ok"
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    records = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("event") == "access"]
    assert [r["status"] for r in access] == [401, 200]
    assert access[1]["model"] == "fixture-scripted"
    assert access[1]["input_tokens"] > 0 and access[1]["output_tokens"] > 0
    assert access[1]["ttft_ms"] is not None
    assert "sk-env" not in err, "keys never reach the logs"


def test_workers_use_the_env_factory(spawn: Any) -> None:
    bridge = spawn(["--upstream", "fixtures", "--workers", "2", "--store", "none"])
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)
    for i in range(4):
        assert client.responses.create(model="fixture-scripted", input=f"@text w{i}").output_text == f"w{i}"
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err


def test_graceful_sigterm_during_stream(spawn: Any) -> None:
    bridge = spawn(["--upstream", "fixtures", "--store", "none"])
    body = b""
    with httpx.stream(
        "POST", bridge.url + "/responses",
        json={"model": "chaos:stall", "input": "hi", "stream": True}, timeout=30,
    ) as response:  # fmt: skip
        reads = response.iter_raw()
        body += next(reads)
        bridge.proc.send_signal(signal.SIGTERM)
        for part in reads:
            body += part
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    assert body.endswith(b"data: [DONE]\n\n")
    assert b"event: response.failed" in body and b"The server is shutting down." in body


def test_bad_flags_fail_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--upstream", "http://127.0.0.1:9/v1", "--profile", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")},
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown profile 'nope'" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")},
    )  # fmt: skip
    assert result.returncode == 2
    assert "no upstream" in result.stderr
