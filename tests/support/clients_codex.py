"""Run the real Codex CLI (`codex exec`) against a Responses endpoint on loopback.

Codex is installed from npm into `tests/node` (`npm ci --prefix tests/node`); the version is pinned
in `tests/node/package.json`. Each run gets a fresh `CODEX_HOME` holding only a `config.toml` whose
provider points at the bridge, with every feature that reaches other hosts switched off (checked
with strace on 0.169.0, see docs/codex.md), and a minimal environment so nothing from the
developer's own Codex or OpenAI setup (keys, base URLs, proxies) leaks into the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CODEX_BIN = NODE_DIR / "node_modules" / ".bin" / "codex"
API_KEY_ENV = "BRIDGE_API_KEY"

CONFIG_TEMPLATE = """\
model = "{model}"
model_provider = "bridge"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"
{top_level}
[model_providers.bridge]
name = "{name}"
base_url = "{base_url}"
wire_api = "responses"
env_key = "{api_key_env}"
supports_websockets = {websockets}
# A failure must show up as a failure, not be hidden (or slowed down) by retries.
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
# The plugin marketplace sync runs `git ls-remote https://github.com/openai/plugins.git` at start.
plugins = false
remote_plugin = false
apps = false
"""


def codex_binary() -> Path:
    """The installed Codex CLI; a missing install fails the test (CI must install it, not skip it)."""
    if not CODEX_BIN.exists():
        pytest.fail(
            f"Codex CLI not installed at {CODEX_BIN}: run `npm ci --prefix tests/node` first",
            pytrace=False,
        )
    return CODEX_BIN


@dataclass
class CodexRun:
    """What one `codex exec --json` run left behind."""

    returncode: int
    stdout: str
    stderr: str
    last_message: str
    workdir: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """Completed items of one type (`agent_message`, `command_execution`, …)."""
        return [
            event["item"]
            for event in self.events
            if event.get("type") == "item.completed" and event.get("item", {}).get("type") == item_type
        ]

    def failures(self) -> list[dict[str, Any]]:
        """Turn failures and stream errors Codex reported (its model-metadata warning is not one)."""
        return [event for event in self.events if event.get("type") in ("turn.failed", "error")]

    def describe(self) -> str:
        """Everything needed to understand a failed assertion, for the assertion message."""
        return (
            f"codex exit {self.returncode}\n--- last message ---\n{self.last_message}\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def codex_config(base_url: str, model: str, *, provider_name: str = "responses-bridge", websockets: bool = False,
                 auto_compact_token_limit: int | None = None) -> str:
    """Our config.toml for Codex: local-only, pointed at `base_url`. `provider_name="OpenAI"` is what makes
    Codex use remote compaction for a custom base URL (docs/codex.md); `websockets` turns WebSocket mode on."""
    top_level = "" if auto_compact_token_limit is None else f"model_auto_compact_token_limit = {auto_compact_token_limit}\n"
    return CONFIG_TEMPLATE.format(model=model, base_url=base_url, api_key_env=API_KEY_ENV, name=provider_name,
                                  websockets=str(websockets).lower(), top_level=top_level)  # fmt: skip


def write_codex_home(home: Path, base_url: str, model: str) -> None:
    """A CODEX_HOME with only our config.toml (no auth.json, no user config)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(codex_config(base_url, model), encoding="utf-8")


def codex_env(home: Path, codex_home: Path, base_url: str, api_key: str) -> dict[str, str]:
    """A minimal environment: no inherited OpenAI keys, base URLs or proxies; loopback never proxied."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        API_KEY_ENV: api_key,
        # Belt and braces: should any code path fall back to the built-in OpenAI provider, it too
        # would talk to the bridge on loopback.
        "OPENAI_BASE_URL": base_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    return env


def run_codex(
    base_url: str,
    prompt: str,
    tmp_path: Path,
    *,
    model: str = "bridge-test-model",
    api_key: str = "sk-codex-test",
    timeout: float = 100.0,
) -> CodexRun:
    """One non-interactive Codex turn (`codex exec`), bounded by `timeout` seconds."""
    binary = codex_binary()
    if shutil.which("node", path=os.environ.get("PATH")) is None:
        pytest.fail("node is not on PATH: Codex CLI's launcher needs it", pytrace=False)
    codex_home = tmp_path / "codex-home"
    home = tmp_path / "home"
    workdir = tmp_path / "work"
    for directory in (home, workdir):
        directory.mkdir(parents=True, exist_ok=True)
    write_codex_home(codex_home, base_url, model)
    last_message_file = tmp_path / "last-message.txt"
    command = [
        str(binary),
        "exec",
        "--json",
        "--ephemeral",
        "--strict-config",
        "--skip-git-repo-check",
        "--sandbox",
        "danger-full-access",
        "--cd",
        str(workdir),
        "--output-last-message",
        str(last_message_file),
        prompt,
    ]
    try:
        completed = subprocess.run(
            command,
            cwd=workdir,
            env=codex_env(home, codex_home, base_url, api_key),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"codex exec did not finish in {timeout}s\n--- stdout ---\n{out}\n--- stderr ---\n{err}")
    events: list[dict[str, Any]] = []
    for line in completed.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    last_message = last_message_file.read_text(encoding="utf-8") if last_message_file.exists() else ""
    return CodexRun(
        returncode=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr,
        last_message=last_message,
        workdir=workdir,
        events=events,
    )
