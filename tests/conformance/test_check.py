"""`responses-bridge check` against the real bridge (must pass) and against deliberately broken endpoints.

The broken endpoints are a small Starlette proxy in front of the real bridge that breaks exactly one
thing (drops response.in_progress and content_part events, renames usage to chat's prompt_tokens, cuts
the terminal event, or answers errors in FastAPI's shape). Everything else stays correct, so the test can
assert the exact set of rules check reports, not just "something failed".
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conformance import check, parse_sse
from fixtures.chaos import closed_port_url
from tests.support.servers import free_port, run_app

REPO = Path(__file__).resolve().parents[2]
MODEL = "check-model"


def run_check(*argv: str) -> tuple[int, str, str]:
    """`check` in-process: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = check.run(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def run_json(base_url: str, *extra: str) -> tuple[int, dict]:
    code, out, _ = run_check("--base-url", base_url, "--model", MODEL, "--json", "--timeout", "30", *extra)
    return code, json.loads(out)


def rules_by_scenario(report: dict) -> dict[str, set[str]]:
    return {s["name"]: {v["rule"] for v in s["violations"]} for s in report["scenarios"]}


# ----------------------------------------------------------------------------------------------
# the real bridge passes


def test_check_passes_against_the_bridge(bridge_url: str) -> None:
    code, out, err = run_check("--base-url", bridge_url, "--model", MODEL, "--timeout", "30")
    assert code == 0, out
    names = [s.name for s in check.SCENARIOS]
    for name in names:
        assert any(line.split()[:2] in ([name, "PASS"], [name, "SKIP"]) for line in out.splitlines()), out
    # one progress line per scenario on stderr, table on stdout
    assert [line.split("]")[0] + "]" for line in err.splitlines()] == [
        f"[{n}/{len(names)}]" for n in range(1, len(names) + 1)
    ]
    assert "0 failed, 0 errors" in out


def test_check_json_report_against_the_bridge(bridge_url: str) -> None:
    code, report = run_json(bridge_url)
    assert code == 0
    assert report["passed"] is True
    assert report["summary"]["violations"] == 0
    assert report["summary"]["scenarios"] == len(check.SCENARIOS)
    by_name = {s["name"]: s for s in report["scenarios"]}
    assert by_name["text-stream"]["events"] >= 8  # created … completed for a text answer
    assert by_name["bad-request"]["status_code"] == 400
    # the default bridge routes any model name to its one upstream: nothing to check there
    assert by_name["unknown-model"]["result"] == "skip"
    assert all(s["result"] == "pass" for n, s in by_name.items() if n != "unknown-model")


def test_check_passes_against_the_bridge_with_the_open_responses_profile(bridge_url: str) -> None:
    code, report = run_json(bridge_url, "--profile", "openresponses", "--skip", "unknown-model")
    assert code == 0, [s for s in report["scenarios"] if s["violations"]]
    assert report["profile"] == "openresponses"
    assert {s["result"] for s in report["scenarios"]} == {"pass"}


def test_unknown_model_is_checked_when_the_bridge_has_a_model_list(make_bridge: Callable[..., Any]) -> None:
    bridge = make_bridge(upstream={"models": (MODEL,)})
    code, report = run_json(bridge.url, "--scenario", "unknown-model", "--scenario", "text")
    assert code == 0, report
    [unknown] = [s for s in report["scenarios"] if s["name"] == "unknown-model"]
    assert unknown["result"] == "pass"
    assert 400 <= unknown["status_code"] < 500


def test_check_as_a_subprocess(bridge_url: str) -> None:
    """`python -m conformance.check` and `python -m server check` (the responses-bridge entry point)."""
    for module in (["conformance.check"], ["server", "check"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                *module,
                "--base-url",
                bridge_url,
                "--model",
                MODEL,
                "--json",
                "--scenario",
                "text-stream",
                "--scenario",
                "tool-call-stream",
                "--timeout",
                "30",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RESPONSES_BRIDGE_CHECK_API_KEY": ""},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert [s["name"] for s in report["scenarios"]] == ["text-stream", "tool-call-stream"]
        assert report["passed"] is True


# ----------------------------------------------------------------------------------------------
# usage errors and transport failures


def test_list_and_usage_errors() -> None:
    code, out, _ = run_check("--list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["scenario", "answer", "description"]
    assert [line.split()[0] for line in rows] == [s.name for s in check.SCENARIOS]
    code, _, err = run_check("--base-url", "http://127.0.0.1:1/v1", "--model", "m", "--scenario", "nope")
    assert code == 2
    assert "nope" in err
    code, _, err = run_check("--model", "m")
    assert code == 2
    assert "--base-url" in err


def test_list_columns_are_aligned() -> None:
    """Every row's answer and description start where the header's do, and no cell runs into the next."""
    _, out, _ = run_check("--list")
    header, *rows = out.splitlines()
    answer_at, description_at = header.index("answer"), header.index("description")
    assert len(rows) == len(check.SCENARIOS)
    for line, scenario in zip(rows, check.SCENARIOS, strict=True):
        assert line[:answer_at].rstrip() == scenario.name
        assert line[answer_at - 2 : answer_at] == "  "  # at least two spaces after the longest name
        assert line[answer_at:description_at].rstrip() == ("stream" if scenario.stream else "body")
        assert line[description_at:] == scenario.description
    assert answer_at == max(len(s.name) for s in check.SCENARIOS) + 2


def _counting_endpoint(routes: dict[str, Callable[[dict], Response]]) -> tuple[Starlette, list[str]]:
    """An app answering POST on each path in ``routes`` (404 in OpenAI's shape elsewhere) that records
    every path it was asked for, so a test can count the requests check made."""
    seen: list[str] = []

    async def endpoint(request: Request) -> Response:
        path = "/" + request.path_params["path"]
        seen.append(path)
        if path in routes:
            return routes[path](orjson.loads(await request.body()))
        error = {"message": f"No route for POST {path}.", "type": "not_found_error", "param": None,
                 "code": "not_found"}  # fmt: skip
        return JSONResponse({"error": error}, status_code=404)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])]), seen


def _reject_bad_input(body: dict) -> Response:
    error = {"message": "Invalid type for 'input'.", "type": "invalid_request_error", "param": "input",
             "code": "invalid_type"}  # fmt: skip
    return JSONResponse({"error": error}, status_code=400)


def test_nothing_listening_is_one_line_and_exit_2() -> None:
    url = closed_port_url()
    code, out, err = run_check("--base-url", url, "--model", MODEL, "--timeout", "5")
    assert code == 2
    assert out == ""
    assert err.splitlines() == [err.strip()], err  # one line, no per-scenario progress
    assert err.startswith(f"check: cannot connect to {url}/responses: ")
    assert "refused" in err.lower()
    code, out, err = run_check("--base-url", url, "--model", MODEL, "--json", "--timeout", "5")
    assert (code, out, len(err.splitlines())) == (2, "", 1)


def test_base_url_without_v1_is_one_line_and_exit_2(bridge: Any) -> None:
    """The real bridge at http://host:port (no /v1): one line naming the fix, not 14 failed scenarios."""
    code, out, err = run_check("--base-url", bridge.root, "--model", MODEL, "--timeout", "30")
    assert code == 2
    assert out == ""
    assert err == (
        f"check: POST {bridge.root}/responses answered 404, but {bridge.root}/v1/responses answers 400: "
        f"the base URL needs its /v1 (--base-url {bridge.root}/v1)\n"
    )


def test_the_v1_probe_is_two_requests_and_no_scenario() -> None:
    app, seen = _counting_endpoint({"/v1/responses": _reject_bad_input})
    with run_app(app) as server:
        code, out, err = run_check("--base-url", server.url + "/", "--model", MODEL, "--timeout", "10")
    assert (code, out) == (2, "")
    assert "the base URL needs its /v1" in err and len(err.splitlines()) == 1
    assert seen == ["/responses", "/v1/responses"]


def test_no_responses_route_at_all_is_one_line_and_exit_2() -> None:
    """A 404 about the route, with /v1 already in the URL (nothing to suggest): one line, exit 2."""
    app, seen = _counting_endpoint({"/api/v1/responses": _reject_bad_input})
    with run_app(app) as server:
        code, out, err = run_check("--base-url", server.url + "/v1", "--model", MODEL, "--timeout", "10")
    assert code == 2
    assert out == ""
    assert err.startswith(f"check: POST {server.url}/v1/responses answered 404 (")
    assert err.rstrip().endswith("--base-url must be the URL that /responses is under, e.g. http://HOST:PORT/v1")
    assert len(err.splitlines()) == 1
    assert seen == ["/v1/responses"]


def test_a_404_about_the_model_runs_the_scenarios() -> None:
    """OpenAI answers an unknown model with 404 model_not_found: the route exists, so check runs and
    reports it per scenario instead of stopping."""

    def no_such_model(body: dict) -> Response:
        error = {"message": f"The model `{body.get('model')}` does not exist.", "type": "invalid_request_error",
                 "param": None, "code": "model_not_found"}  # fmt: skip
        return JSONResponse({"error": error}, status_code=404)

    app, seen = _counting_endpoint({"/v1/responses": no_such_model})
    with run_app(app) as server:
        code, report = run_json(server.url + "/v1", "--scenario", "text", "--scenario", "unknown-model")
    assert code == 1
    assert rules_by_scenario(report) == {"text": {"http-status"}, "unknown-model": set()}
    assert seen == ["/v1/responses"] * 3  # the probe, then the two scenarios


def test_a_base_url_without_a_scheme_is_one_line_and_exit_2() -> None:
    code, out, err = run_check("--base-url", "127.0.0.1:8080/v1", "--model", MODEL)
    assert code == 2
    assert out == ""
    assert err == (
        "check: --base-url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1; "
        "got '127.0.0.1:8080/v1'\n"
    )


def test_a_timeout_is_reported_per_scenario() -> None:
    """Only "nothing there" stops the check: an endpoint that accepts and never answers is a finding."""
    import socket

    with socket.socket() as listener:  # accepts connections (the OS backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        code, report = run_json(url, "--scenario", "text", "--timeout", "1")
    assert code == 1
    [result] = report["scenarios"]
    assert result["result"] == "error"
    assert [v["rule"] for v in result["violations"]] == ["transport"]


# ----------------------------------------------------------------------------------------------
# broken endpoints: a proxy in front of the bridge that breaks one thing


def _renumber(events: list[dict]) -> list[dict]:
    for position, event in enumerate(events):
        event["sequence_number"] = position
    return events


def _drop_lifecycle_and_parts(events: list[dict]) -> list[dict]:
    dropped = ("response.in_progress", "response.content_part.added", "response.content_part.done")
    return _renumber([e for e in events if e["type"] not in dropped])


def _chat_usage(body: dict) -> dict:
    usage = body.get("usage")
    if isinstance(usage, dict):
        body["usage"] = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"],
        }
    return body


def _chat_usage_events(events: list[dict]) -> list[dict]:
    for event in events:
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            _chat_usage(event["response"])
    return events


def _no_terminal(events: list[dict]) -> list[dict]:
    return [
        e for e in events if e["type"] not in ("response.completed", "response.incomplete", "response.failed")
    ]


# mode → (event mutation, body mutation, whether [DONE] is sent, FastAPI-style errors)
MODES: dict[str, tuple[Callable[[list[dict]], list[dict]], Callable[[dict], dict], bool, bool]] = {
    "no-in-progress-no-parts": (_drop_lifecycle_and_parts, lambda b: b, True, False),
    "chat-usage": (_chat_usage_events, _chat_usage, True, False),
    "no-terminal": (_no_terminal, lambda b: b, False, False),
    "fastapi-errors": (lambda e: e, lambda b: b, True, True),
}


def _encode(events: list[dict], done: bool) -> bytes:
    frames = [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]
    return b"".join(frames) + (b"data: [DONE]\n\n" if done else b"")


@pytest.fixture(scope="module")
def broken_url(bridge_url: str) -> Iterator[Callable[[str], str]]:
    """`broken_url(mode)` is the base URL of a Responses endpoint that breaks one thing (see MODES)."""

    async def responses(request: Request) -> Response:
        mutate_events, mutate_body, send_done, fastapi_errors = MODES[request.path_params["mode"]]
        body = await request.body()
        async with httpx.AsyncClient(timeout=30) as client:
            upstream = await client.post(
                bridge_url + "/responses", content=body, headers={"content-type": "application/json"}
            )
        if upstream.status_code >= 400:
            if fastapi_errors:
                return JSONResponse({"detail": upstream.json()["error"]["message"]}, status_code=422)
            return Response(upstream.content, upstream.status_code, media_type="application/json")
        if upstream.headers["content-type"].startswith("text/event-stream"):
            events, _ = parse_sse(upstream.content)
            return Response(_encode(mutate_events(events), send_done), media_type="text/event-stream")
        return JSONResponse(mutate_body(upstream.json()))

    app = Starlette(routes=[Route("/{mode}/v1/responses", responses, methods=["POST"])])
    with run_app(app) as running:
        yield lambda mode: f"{running.url}/{mode}/v1"


STREAMS = {s.name for s in check.SCENARIOS if s.stream}
TEXT_STREAMS = {n for n in STREAMS if not n.startswith("tool-call")}  # streams whose answer is a message
BODIES = {s.name for s in check.SCENARIOS if not s.stream and s.expect_status == "ok"}


def test_missing_in_progress_and_content_parts_are_reported(broken_url: Callable[[str], str]) -> None:
    code, report = run_json(broken_url("no-in-progress-no-parts"))
    assert code == 1
    rules = rules_by_scenario(report)
    for name in TEXT_STREAMS:  # the SDK's accumulator fails on a delta for a part it never saw
        assert rules[name] == {"in-progress", "content-index", "sdk-accumulator"}, (name, rules[name])
    for name in STREAMS - TEXT_STREAMS:  # tool calls have no content parts
        assert rules[name] == {"in-progress"}, (name, rules[name])
    assert all(not rules[name] for name in BODIES)


def test_chat_style_usage_is_reported(broken_url: Callable[[str], str]) -> None:
    code, report = run_json(broken_url("chat-usage"))
    assert code == 1
    rules = rules_by_scenario(report)
    for name in STREAMS | BODIES:
        assert rules[name] == {"usage"}, (name, rules[name])
    [text] = [s for s in report["scenarios"] if s["name"] == "text"]
    assert any("prompt_tokens" in v["message"] for v in text["violations"])


def test_missing_terminal_event_is_reported(broken_url: Callable[[str], str]) -> None:
    code, report = run_json(broken_url("no-terminal"))
    assert code == 1
    rules = rules_by_scenario(report)
    for name in STREAMS:
        assert rules[name] == {"terminal"}, (name, rules[name])
    assert all(not rules[name] for name in BODIES)
    # Open Responses also requires the closing data: [DONE] (OpenAI's API does not send it)
    code, report = run_json(
        broken_url("no-terminal"), "--profile", "openresponses", "--scenario", "text-stream"
    )
    assert code == 1
    assert rules_by_scenario(report) == {"text-stream": {"terminal", "sse-done"}}


def test_non_openai_error_shape_is_reported(broken_url: Callable[[str], str]) -> None:
    code, report = run_json(broken_url("fastapi-errors"), "--scenario", "bad-request", "--scenario", "text")
    assert code == 1
    assert rules_by_scenario(report) == {"bad-request": {"error-shape"}, "text": set()}


def test_table_names_the_violations(broken_url: Callable[[str], str]) -> None:
    code, out, _ = run_check("--base-url", broken_url("chat-usage"), "--model", MODEL, "--scenario", "text")
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("text "))
    assert row.split()[1] == "FAIL"
    assert int(row.split()[2]) >= 1
    assert "usage: chat-style usage key(s) prompt_tokens" in row


# ----------------------------------------------------------------------------------------------
# public peer bridges from PyPI (opt-in: installed beforehand into their own venvs, since tests never
# reach the internet; docs/conformance.md has the install commands and the recorded output)

LITELLM_KEY = "sk-check-1234567890abcdef"


def _codex_bridge_python(venv: Path, port: int, backend_url: str, home: Path) -> list[str]:
    return [str(venv / "bin" / "codex-bridge-python"), "--port", str(port), "--upstream", backend_url,
            "--api-key", "x", "--history-dir", str(home / "history")]  # fmt: skip


def _litellm(venv: Path, port: int, backend_url: str, home: Path) -> list[str]:
    config = home / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{MODEL}\n"
        f"      api_base: {backend_url}\n"
        "      api_key: x\n"
        "      use_chat_completions_api: true\n"
    )
    return [
        str(venv / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _check_codex_bridge_python(rules: dict[str, set[str]]) -> None:
    assert {"response-field", "usage", "item-field"} <= rules["text"]
    assert {"sequence-number", "in-progress", "event-fields", "sdk-accumulator"} <= rules["text-stream"]
    assert "unclosed-part" in rules["tool-call-stream"]  # item done before function_call_arguments.done
    assert {"echo", "scenario"} <= rules["structured-output"]  # the json_schema format is not forwarded
    assert rules["bad-request"] == {"json-body"}  # a plain-text 422


def _check_litellm(rules: dict[str, set[str]]) -> None:
    assert rules["text"] == {"response-field", "response-type"}  # top_p/temperature/store null, text {}
    assert {"sse-event-name", "sequence-number", "event-fields"} <= rules["text-stream"]
    assert rules["bad-request"] == {"http-status"}  # a 500
    assert rules["unknown-model"] == set()


# name → (env var holding the venv, executable, command, extra check flags, expected findings)
PEERS: dict[str, tuple[str, str, Callable[..., list[str]], tuple[str, ...], Callable[[dict], None]]] = {
    "codex-bridge-python==0.1.5": (
        "RESPONSES_BRIDGE_PEER_VENV", "codex-bridge-python", _codex_bridge_python, (), _check_codex_bridge_python
    ),
    "litellm[proxy]==1.106.2": (
        "RESPONSES_BRIDGE_PEER_LITELLM_VENV", "litellm", _litellm, ("--api-key", LITELLM_KEY), _check_litellm
    ),
}  # fmt: skip


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_check_reports_the_violations_of_a_pypi_peer(peer: str, backend_url: str, tmp_path: Path) -> None:
    """A peer in front of the fixture backend yields the findings recorded in docs/conformance.md."""
    env_var, executable, command, flags, expect = PEERS[peer]
    venv = Path(os.environ.get(env_var, "/nonexistent"))
    if not (venv / "bin" / executable).exists():
        pytest.skip(f"opt-in: set {env_var} to a venv with `pip install '{peer}'` (see docs/conformance.md)")
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "LITELLM_MASTER_KEY": LITELLM_KEY,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}  # fmt: skip
    process = subprocess.Popen(
        command(venv, port, backend_url, tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120  # LiteLLM takes ~20 s to start
        while True:
            try:
                httpx.get(base + "/models", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    pytest.fail(f"{peer} exited with {process.returncode}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{peer} did not start within 120 s")
                time.sleep(0.3)
        code, report = run_json(base, *flags)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    assert code == 1
    expect(rules_by_scenario(report))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"output": 5},
        {"output": [5, {"type": "message", "content": 3}]},
        {"output": [{"type": "message", "content": [{"type": "output_text", "text": ["x"]}]}]},
        {"output": [{"type": "function_call", "name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"output": [{"type": "function_call", "name": "get_weather", "arguments": "{not json"}]},
    ],
)
def test_scenario_expectations_report_junk_instead_of_crashing(body: dict) -> None:
    for scenario in check.SCENARIOS:
        if scenario.expect is not None:
            problems = scenario.expect(body)
            assert problems, (scenario.name, body)  # none of these bodies is a good answer
            assert all(isinstance(p, str) for p in problems)


def test_api_key_is_sent_as_bearer(make_bridge: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = make_bridge(api_keys=("check-secret",))
    monkeypatch.setenv("OPENAI_API_KEY", "check-secret")  # never used: it must not leak to the endpoint
    code, report = run_json(bridge.url, "--scenario", "text")
    assert code == 1
    assert report["scenarios"][0]["status_code"] == 401
    assert rules_by_scenario(report) == {"text": {"http-status"}}
    code, report = run_json(bridge.url, "--scenario", "text", "--api-key", "check-secret")
    assert code == 0, report
    monkeypatch.setenv("RESPONSES_BRIDGE_CHECK_API_KEY", "check-secret")
    assert run_json(bridge.url, "--scenario", "text-stream")[0] == 0
