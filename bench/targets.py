"""The things the benchmark measures, and how each is installed and started.

Each target answers the same work: the direct backend answers chat-completions requests itself; the
bridges (this project, codex-relay, LiteLLM) answer the equivalent Responses request by calling that
same backend.  Request bodies are the smallest realistic ones; Responses bodies carry
``"store": false`` as Codex CLI sends it (so no bridge spends the run writing a response store).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from install import CODEX_RELAY, LITELLM, VenvSpec

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = BENCH / ".work"
PROMPT = "Write a few words."


def project_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    import sys

    return str(venv) if venv.exists() else sys.executable


def chat_body(model: str, stream: bool) -> str:
    body: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":"))


def responses_body(model: str, stream: bool) -> str:
    body: dict = {"model": model, "input": PROMPT, "store": False}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


@dataclass
class Target:
    """One thing to measure: a label, how to reach it, how to start it."""

    key: str
    label: str
    kind: str  # "chat" (the backend itself) or "responses" (a bridge)
    argv: Callable[[int, str], list[str]]  # (port, upstream base URL) -> command line
    env: dict[str, str] = field(default_factory=dict)
    venv: VenvSpec | None = None
    ready_timeout: float = 60.0
    note: str = ""

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.kind == "chat" else "/v1/responses"

    def body(self, model: str, stream: bool) -> str:
        return chat_body(model, stream) if self.kind == "chat" else responses_body(model, stream)


def _bridge_argv(workers: int) -> Callable[[int, str], list[str]]:
    def argv(port: int, upstream: str) -> list[str]:
        return [project_python(), "-m", "server", "serve", "--upstream", upstream,
                "--port", str(port), "--workers", str(workers)]

    return argv


def _codex_relay_argv(port: int, upstream: str) -> list[str]:
    return [str(CODEX_RELAY.path("bin/codex-relay")), "--port", str(port), "--upstream", upstream,
            "--api-key", "bench"]


def litellm_config(upstream: str) -> Path:
    """LiteLLM's proxy config: each bench model routed through its Responses→chat bridge.

    ``use_chat_completions_api: true`` makes LiteLLM translate /v1/responses into chat completions
    for an ``openai/`` deployment instead of forwarding the Responses request natively.
    """
    WORK.mkdir(parents=True, exist_ok=True)
    lines = ["model_list:"]
    for model in ("bench-64", "bench-64p", "bench-512", "bench-stall"):
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f'      api_base: "{upstream}"',
            "      api_key: bench",
            "      use_chat_completions_api: true",
        ]
    lines += ["litellm_settings:", "  set_verbose: false", "  turn_off_message_logging: true", ""]
    path = WORK / "litellm.yaml"
    path.write_text("\n".join(lines))
    return path


def _litellm_argv(port: int, upstream: str) -> list[str]:
    return [str(LITELLM.path("bin/litellm")), "--config", str(litellm_config(upstream)),
            "--port", str(port), "--host", "127.0.0.1"]


def backend_argv(port: int, procs: int) -> list[str]:
    return [project_python(), str(BENCH / "backend.py"), "--port", str(port), "--procs", str(procs)]


def all_targets(bridge_workers: list[int]) -> list[Target]:
    targets = [
        Target("direct", "direct backend", "chat", lambda port, upstream: [],
               note="the bench backend itself, answering chat completions"),
    ]
    for w in bridge_workers:
        targets.append(Target(f"bridge-w{w}", f"responses-bridge (--workers {w})", "responses",
                              _bridge_argv(w), env={"PYTHONPATH": str(REPO)},
                              note="this project: uvicorn + uvloop + httptools"))
    targets.append(Target("codex-relay", "codex-relay", "responses", _codex_relay_argv, venv=CODEX_RELAY,
                          note="Rust (axum + reqwest), from PyPI's prebuilt wheel"))
    targets.append(Target("litellm", "LiteLLM proxy", "responses", _litellm_argv, venv=LITELLM,
                          env={"LITELLM_LOCAL_MODEL_COST_MAP": "True",
                               "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"},
                          ready_timeout=180.0,
                          note="litellm[proxy], use_chat_completions_api: true, no master key, no database"))
    return targets
