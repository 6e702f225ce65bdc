"""The real Codex CLI compacting through the bridge (remote compaction v2 and local compaction).

Codex uses remote compaction with a custom base URL when the provider's display name is ``OpenAI``
(docs/codex.md, "Compaction"); a low ``model_auto_compact_token_limit`` makes it compact in the
middle of a tool turn. It then sends ``POST /v1/responses`` with ``compaction_trigger`` last, needs
exactly one ``compaction`` item back, and sends that item on the next request.

The bridge answers the trigger itself (server/turn.py, server/compact.py): it asks the backend for the
summary, answers the one compaction item, and expands the item into the summary when Codex sends it
back. `_TriggerWatch` only watches, at the bridge's ASGI boundary, which requests carried the trigger
or a compaction item, over HTTP and over the WebSocket.
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

from tests.conftest import bridge_config
from tests.support.clients_codex import codex_binary, codex_config, codex_env
from tests.support.servers import RunningServer, read_body, replaying, run_app

PROMPT = 'create the file\n@call exec_command {"cmd": "echo hi > made.txt"}'

class _TriggerWatch:
    """Counts the requests (HTTP bodies, WebSocket messages) carrying the trigger or a compaction item."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.triggers = {"http": 0, "websocket": 0}
        self.items_back = {"http": 0, "websocket": 0}

    def _look(self, transport: str, raw: bytes | str) -> None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        items = body.get("input") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return
        kinds = [item.get("type") for item in items if isinstance(item, dict)]
        if kinds and kinds[-1] == "compaction_trigger":
            self.triggers[transport] += 1
        elif "compaction" in kinds:
            self.items_back[transport] += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":

            async def watched_ws() -> Message:
                message = await receive()
                if message["type"] == "websocket.receive" and message.get("text"):
                    self._look("websocket", message["text"])
                return message

            await self.app(scope, watched_ws, send)
            return
        if scope["type"] != "http" or scope["path"] != "/v1/responses" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        self._look("http", body)
        await self.app(scope, replaying(body, receive), send)


def _run_codex(base_url: str, name: str, tmp_path: Path, websockets: bool = False) -> tuple[int, list[dict[str, Any]], str]:
    codex_home, home, work = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, work):
        directory.mkdir(parents=True)
    (codex_home / "config.toml").write_text(codex_config(base_url, "fixture-scripted", provider_name=name, websockets=websockets,
                                                            auto_compact_token_limit=300), encoding="utf-8")
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


@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_codex_remote_compaction_v2_round_trip(fresh_backend: RunningServer, tmp_path: Path, transport: str) -> None:
    from server.app import create_app

    watch = _TriggerWatch(create_app(bridge_config(fresh_backend.url + "/v1", store="memory")))
    with run_app(watch) as bridge:
        code, events, log = _run_codex(bridge.url + "/v1", "OpenAI", tmp_path, websockets=transport == "websocket")
    assert code == 0, log
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], log
    assert watch.triggers[transport] == 1, (watch.triggers, log)
    assert watch.items_back[transport] >= 1, "Codex did not send the compaction item back"
    other = "http" if transport == "websocket" else "websocket"
    assert watch.triggers[other] == watch.items_back[other] == 0, "everything went over one transport"
    assert (tmp_path / "work" / "made.txt").exists()
    texts = _backend_texts(fresh_backend)
    # The bridge asked the backend for the summary of the conversation so far...
    assert any(t.startswith("Transcript of the session to compact") and "made.txt" in t for t in texts), texts
    # ...and the turn after the compaction reached the backend with that summary in place of the history.
    after = texts[-1]
    # (The fixture model's "summary" is its scripted answer to the transcript, which still holds the
    # @call directive: "I cannot call exec_command…", since the summary request offers no tools.)
    assert "[Context compacted by responses-bridge]" in after, after
    assert "<summary>\nI cannot call exec_command" in after, after


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
