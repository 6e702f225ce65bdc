"""The real Codex CLI compacting through the bridge (remote compaction v2 and local compaction).

Codex uses remote compaction with a custom base URL when the provider's display name is ``OpenAI``
(docs/codex.md, "Compaction"); a low ``model_auto_compact_token_limit`` makes it compact in the
middle of a tool turn. It then sends ``POST /v1/responses`` with ``compaction_trigger`` last, needs
exactly one ``compaction`` item back, and sends that item on the next request.

`POST /v1/responses` does not call `translator.compaction` yet (its restructuring is under way), so
the remote test puts the hook the route will have in front of the bridge as a small ASGI wrapper
(`_CompactionHook`): trigger → `trigger_response` / `trigger_events`; compaction items →
`expand_compaction_items`. The summary there is fixed text (the summarisation call itself is tested
over HTTP in test_compaction_http.py). When the route has the hook, drop the wrapper.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.clients_codex import codex_binary, codex_env
from tests.conftest import bridge_config
from tests.servers import RunningServer, run_app
from translator import DONE_FRAME, encode_sse
from translator.compaction import (
    expand_compaction_items,
    has_compaction_items,
    split_compaction_trigger,
    trigger_events,
    trigger_response,
)

SUMMARY = "SUMMARY-7Q: the user asked to create made.txt; it was created with `echo hi`."
PROMPT = 'create the file\n@call exec_command {"cmd": "echo hi > made.txt"}'

CONFIG = """\
model = "fixture-scripted"
model_provider = "bridge"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"
model_auto_compact_token_limit = 300

[model_providers.bridge]
name = "{name}"
base_url = "{base_url}"
wire_api = "responses"
env_key = "BRIDGE_API_KEY"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false
"""


class _CompactionHook:
    """What `POST /v1/responses` is to do with compaction (docs/compaction.md, "Hooks"), as a wrapper."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.triggers = 0
        self.expanded = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/responses" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = orjson.loads(body)
        items, triggered = split_compaction_trigger(payload.get("input"))
        if triggered:
            self.triggers += 1
            response = trigger_response(payload, SUMMARY, {"prompt_tokens": 10, "completion_tokens": 5},
                                        model=payload["model"])  # fmt: skip
            frames = b"".join(encode_sse(event) for event in trigger_events(response)) + DONE_FRAME
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": frames})
            return
        if has_compaction_items(items):
            self.expanded += 1
            body = orjson.dumps({**payload, "input": expand_compaction_items(items)})
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _run_codex(base_url: str, name: str, tmp_path: Path) -> tuple[int, list[dict[str, Any]], str]:
    codex_home, home, work = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, work):
        directory.mkdir(parents=True)
    (codex_home / "config.toml").write_text(CONFIG.format(name=name, base_url=base_url), encoding="utf-8")
    command = [str(codex_binary()), "exec", "--json", "--ephemeral", "--strict-config", "--skip-git-repo-check",
               "--sandbox", "danger-full-access", "--cd", str(work), PROMPT]  # fmt: skip
    done = subprocess.run(command, cwd=work, env=codex_env(home, codex_home, base_url, "sk-codex-test"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, events, done.stdout[-4000:] + done.stderr[-2000:]


def _backend_texts(backend: RunningServer) -> list[str]:
    body = httpx.get(backend.url + "/_fixture/requests", timeout=10).json()
    requests = body.get("requests", body) if isinstance(body, dict) else body
    texts = []
    for request in requests:
        last = request["messages"][-1]
        content = last.get("content")
        texts.append(
            content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
        )
    return texts


@pytest.fixture
def fresh_backend() -> Any:
    from fixtures.backend import create_app

    with run_app(create_app()) as running:
        yield running


def test_codex_remote_compaction_v2_round_trip(fresh_backend: RunningServer, tmp_path: Path) -> None:
    from server.app import create_app

    hook = _CompactionHook(create_app(bridge_config(fresh_backend.url + "/v1", store="memory")))
    with run_app(hook) as bridge:
        code, events, log = _run_codex(bridge.url + "/v1", "OpenAI", tmp_path)
    assert code == 0, log
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], log
    assert hook.triggers == 1, "Codex did not send a compaction_trigger request"
    assert hook.expanded >= 1, "Codex did not send the compaction item back"
    assert (tmp_path / "work" / "made.txt").exists()
    # The turn after the compaction reached the backend with the summary in place of the history.
    after = _backend_texts(fresh_backend)[-1]
    assert "[Context compacted by responses-bridge]" in after and SUMMARY in after, after


def test_codex_local_compaction_with_a_plain_provider_name(
    fresh_backend: RunningServer, tmp_path: Path
) -> None:
    """Any other provider name: Codex summarises with an ordinary turn, which works with no hook."""
    from server.app import create_app

    with run_app(create_app(bridge_config(fresh_backend.url + "/v1", store="memory"))) as bridge:
        code, events, log = _run_codex(bridge.url + "/v1", "responses-bridge", tmp_path)
    assert code == 0, log
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], log
    texts = _backend_texts(fresh_backend)
    assert any("CONTEXT CHECKPOINT COMPACTION" in t for t in texts), texts
