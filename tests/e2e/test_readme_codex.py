"""The README's Codex config, as written, runs the real Codex CLI through the bridge.

`tests/e2e/test_readme.py` parses the block and checks the settings that keep Codex on the machine;
this test hands the same block (only its `base_url` and `model` replaced) to `codex exec
--strict-config`, so a key that Codex does not know, or a value it refuses, fails here rather than on
a reader's machine. It also checks that the block does what the README says of it: the turn goes over
the WebSocket (`supports_websockets = true`), with no `POST /v1/responses` at all.

Prerequisite: `npm ci --prefix tests/node`.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import bridge_config
from tests.support.clients_codex import codex_binary, codex_env
from tests.support.servers import RunningServer, run_app

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080/v1"
API_KEY = "sk-readme-codex"


def codex_block() -> str:
    match = re.search(r"```toml\n(model = .*?)```", README.read_text(), flags=re.S)
    assert match, "the README's Codex config block"
    return match.group(1)


class TransportCounter:
    """In front of the bridge: how many WebSocket sessions and HTTP POSTs to /v1/responses came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.websockets = 0
        self.posts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v1/responses":
            self.websockets += 1
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/responses":
            self.posts += 1
        await self.app(scope, receive, send)


@pytest.fixture
def counted_bridge(backend_url: str) -> Iterator[tuple[TransportCounter, RunningServer]]:
    from server.app import create_app

    counter = TransportCounter(create_app(bridge_config(backend_url, api_keys=(API_KEY,), store="none")))
    with run_app(counter) as running:
        yield counter, running


def test_the_codex_block_sets_websockets_and_remote_compaction() -> None:
    config = tomllib.loads(codex_block())
    provider = config["model_providers"][config["model_provider"]]
    assert provider["wire_api"] == "responses" and provider["base_url"] == README_URL
    assert provider["supports_websockets"] is True
    assert provider["name"] == "OpenAI", "the display name Codex requires for remote compaction (docs/codex.md)"
    assert isinstance(config["model_auto_compact_token_limit"], int)


def test_codex_accepts_the_block_and_runs_a_turn_over_the_websocket(
    counted_bridge: tuple[TransportCounter, RunningServer], tmp_path: Path
) -> None:
    counter, bridge = counted_bridge
    base_url = bridge.url.rstrip("/") + "/v1"
    config = codex_block().replace(README_URL, base_url)
    config = re.sub(r'^model = "[^"]*"', 'model = "fixture-scripted"', config, count=1, flags=re.M)
    codex_home, home, work = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, work):
        directory.mkdir()
    (codex_home / "config.toml").write_text(config, encoding="utf-8")
    command = [str(codex_binary()), "exec", "--json", "--ephemeral", "--strict-config", "--skip-git-repo-check",
               "--sandbox", "read-only", "--cd", str(work), "Say hello"]  # fmt: skip
    done = subprocess.run(command, cwd=work, env=codex_env(home, codex_home, base_url, API_KEY),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [e["item"]["text"] for e in events
                if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]  # fmt: skip
    assert messages == ["Echo: Say hello"], report
    assert counter.websockets >= 1 and counter.posts == 0, (counter.websockets, counter.posts)
