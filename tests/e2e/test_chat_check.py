"""`responses-bridge check --api chat`: clean against the bridge in both upstream modes, and it finds
the chunk-grammar violations of backends that have them (the fixture backend's replays of real
backends' quirks stand in for a peer: the PyPI peer in CI serves only /v1/responses)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import orjson
import pytest

from conformance.check import main


def check(base_url: str, model: str, *scenarios: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    argv = ["--api", "chat", "--base-url", base_url, "--model", model, "--json", "--timeout", "30"]
    for name in scenarios:
        argv += ["--scenario", name]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, orjson.loads(out.getvalue())


def rules(report: dict[str, Any]) -> set[str]:
    return {v["rule"] for s in report["scenarios"] for v in s["violations"]}


def test_clean_against_the_bridge_passing_through(bridge_url: str) -> None:
    code, report = check(bridge_url, "fixture-scripted")
    assert code == 0, rules(report)
    assert report["summary"]["passed"] >= 14


def test_clean_against_the_bridge_translating(make_bridge: Any, bridge_url: str) -> None:
    reverse = make_bridge(upstream={"base_url": bridge_url, "api": "responses"})
    code, report = check(reverse.url, "fixture-scripted")
    assert code == 0, rules(report)
    assert report["summary"]["passed"] >= 14


@pytest.mark.parametrize(("model", "rule"), [
    ("fixture:duplicate_finish_openrouter", "chat-one-finish"),
    ("fixture:usage_every_chunk_vllm", "chat-usage"),
    ("fixture:tool_call_no_index_gemini", "chat-tool-call-index"),
    ("fixture:finish_stop_with_tools_gemini", "chat-finish-tool-calls"),
    ("chaos:no-done", "chat-done"),
])
def test_finds_the_violations_of_quirky_backends(backend_url: str, model: str, rule: str) -> None:
    code, report = check(backend_url, model, "text-stream")
    assert code == 1 and rule in rules(report)


def test_the_bridge_relays_a_backend_violation_and_says_whose(bridge_url: str) -> None:
    """Passthrough relays the backend's chunks as they are: its duplicate finish is still there."""
    code, report = check(bridge_url, "fixture:duplicate_finish_openrouter", "text-stream")
    assert code == 1 and "chat-one-finish" in rules(report)


def test_list_shows_the_chat_catalogue() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--api", "chat", "--list"]) == 0
    assert "usage-stream" in out.getvalue()
