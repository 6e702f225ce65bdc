"""Idempotent installs of the load generator and of each peer, each in its own place outside the project.

A fresh machine or CI starts empty, so the benchmark installs what it needs itself, skipping whatever
is present: wrk from Debian's packages, and one virtual environment per Python-distributed peer under
``bench/.venvs/<name>`` (git-ignored), so no peer's dependencies ever reach the project's venv.
A failed install is not fatal: it is recorded (the command and what it answered) and that peer is
reported as not measured.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"


class InstallError(RuntimeError):
    """An install step failed; str() holds the command and the tail of its output."""


@dataclass(frozen=True)
class VenvSpec:
    name: str
    packages: tuple[str, ...]
    probe: str  # a path inside the venv that exists once the install worked

    @property
    def root(self) -> Path:
        return VENVS / self.name

    def path(self, rel: str) -> Path:
        return self.root / rel


TOOLS = VenvSpec("tools", ("matplotlib", "py-spy"), "bin/py-spy")
CODEX_RELAY = VenvSpec("codex-relay", ("codex-relay",), "bin/codex-relay")
LITELLM = VenvSpec("litellm", ("litellm[proxy]",), "bin/litellm")


def _run(cmd: list[str], timeout: float) -> None:
    print(f"  $ {' '.join(cmd)}", flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise InstallError(f"`{' '.join(cmd)}` exited {done.returncode}:\n{tail}")


def _base_python() -> str:
    """A Python >= 3.11 to build venvs from (the interpreter running the benchmark is one)."""
    return sys.executable


def ensure_venv(spec: VenvSpec, timeout: float = 900.0) -> Path:
    """Create spec's venv and install its packages unless already there; return the venv root."""
    if spec.path(spec.probe).exists():
        return spec.root
    print(f"installing {', '.join(spec.packages)} into {spec.root}", flush=True)
    if not spec.path("bin/python").exists():
        _run([_base_python(), "-m", "venv", str(spec.root)], timeout=120)
    _run([str(spec.path("bin/python")), "-m", "pip", "install", "-q", *spec.packages], timeout=timeout)
    if not spec.path(spec.probe).exists():
        raise InstallError(f"installed {spec.packages} but {spec.path(spec.probe)} is missing")
    return spec.root


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)", flush=True)
    _run(["apt-get", "update", "-qq"], timeout=300)
    _run(["apt-get", "install", "-y", "-qq", "wrk"], timeout=300)
    found = shutil.which("wrk")
    if not found:
        raise InstallError("apt-get install wrk succeeded but wrk is not on PATH")
    return found


def version_of(spec: VenvSpec, dist: str) -> str | None:
    try:
        out = subprocess.run([str(spec.path("bin/python")), "-m", "pip", "show", dist],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None
