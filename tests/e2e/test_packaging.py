"""What an operator installs: the Dockerfile, the LICENSE, the version.

No container engine runs here, so the image is not built; the Dockerfile is parsed and what can be run
outside a container is run (its HEALTHCHECK command against a real bridge, its ENTRYPOINT's command)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each Dockerfile line, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _final_stage() -> list[tuple[str, str]]:
    rows = _instructions()
    start = max(i for i, (word, _) in enumerate(rows) if word == "FROM")
    return rows[start:]


def _one(rows: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in rows if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def test_dockerfile_runtime_stage() -> None:
    stage = _final_stage()
    assert _one(stage, "FROM") == "python:3.11-slim"
    user = _one(stage, "USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    assert json.loads(_one(stage, "ENTRYPOINT")) == ["responses-bridge", "serve", "--host", "0.0.0.0"]
    assert json.loads(_one(stage, "VOLUME")) == ["/data"]
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert "RESPONSES_BRIDGE_STORE=sqlite:////data/responses.db" in shlex.split(env)
    assert "--no-cache-dir" in " ".join(rest for word, rest in stage if word == "RUN")
    # the user comes after every RUN, so the server never runs as root
    words = [word for word, _ in stage]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")


def test_dockerfile_copies_only_what_exists() -> None:
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "*.db"} <= set(ignored)


def test_dockerfile_healthcheck_runs_against_a_bridge(tmp_path: Path) -> None:
    from tests.server.test_server_cli import Process

    healthcheck = _one(_final_stage(), "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python" and "/healthz" in command[-1]
    bridge = Process(["--upstream", "fixtures", "--store", f"sqlite:///{tmp_path}/responses.db"])
    try:
        bridge.wait_ready()
        env: dict[str, Any] = {"PATH": "/usr/bin:/bin", "RESPONSES_BRIDGE_PORT": str(bridge.port)}
        done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    finally:
        bridge.stop()
    # and it fails when nothing answers, so the container is marked unhealthy
    done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    assert done.returncode != 0


def test_license_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    for clause in ("1. Definitions.", "3. Grant of Patent License.", "9. Accepting Warranty", "END OF TERMS AND CONDITIONS"):
        assert clause in text
