"""`responses-bridge serve` / `python -m server serve` as a real process: the README's first command."""

from __future__ import annotations

import os
import signal
import socket
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

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
# uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, so the exit status is -15.
CLEAN_EXIT = (0, -signal.SIGTERM)


class Process:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
        full_env.update(env or {})
        full_env["RESPONSES_BRIDGE_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", *args],
            cwd=cwd,
            env={"PYTHONPATH": str(ROOT), **full_env},
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

    def factory(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Process:
        process = Process(args, env, cwd)
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


def test_workers_use_the_env_factory_and_keep_the_access_log(spawn: Any) -> None:
    bridge = spawn(["--upstream", "fixtures", "--workers", "2", "--store", "none"])
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)
    for i in range(4):
        assert client.responses.create(model="fixture-scripted", input=f"@text w{i}").output_text == f"w{i}"
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    access = [line for line in err.splitlines() if "POST /v1/responses 200" in line]
    assert len(access) == 4, err
    assert all("model=fixture-scripted" in line and "upstream=default" in line for line in access)
    # each worker's own app lines arrive too, not only uvicorn's parent process
    assert err.count("serving the fixture backend at") == 2, err
    assert err.count("Application startup complete.") == 2, err


def test_fixture_backend_keeps_uvicorns_own_lines(spawn: Any) -> None:
    bridge = spawn(["--upstream", "fixtures", "--store", "none"])
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    assert "serving the fixture backend at" in err
    assert "Application startup complete." in err, err
    assert "Application shutdown complete." in err, err
    # one server process, so uvicorn's lines once each (the fixture backend's own are not the bridge's)
    assert err.count("Finished server process") == 1, err


def test_serve_accepts_the_example_config_as_is(spawn: Any, tmp_path: Path) -> None:
    bridge = spawn(["--config", str(ROOT / "bridge.example.toml")], cwd=tmp_path)
    models = httpx.get(bridge.url + "/models", timeout=10)
    assert models.status_code == 200
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    assert "upstream local → http://127.0.0.1:11434/v1 (profile ollama)" in err, err
    assert f"store: SQLite file {tmp_path}/responses-bridge.db" in err, err
    assert (tmp_path / "responses-bridge.db").exists()


def test_startup_logs_the_store_and_the_base_url(spawn: Any, tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    bridge = spawn(["--upstream", "fixtures", "--store", f"sqlite:///{db}"])
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    assert f"store: SQLite file {db}" in err, err
    assert f"base URL for clients: http://127.0.0.1:{bridge.port}/v1" in err, err
    assert db.exists()


def test_startup_logs_a_postgres_store_without_its_password(spawn: Any) -> None:
    pytest.importorskip("asyncpg")
    bridge = spawn(["--upstream", "fixtures", "--store", "postgresql://postgres:s3cretpw@127.0.0.1:5432/test"])
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    assert "store: PostgreSQL postgresql://***@127.0.0.1:5432/test" in err, err
    assert "s3cretpw" not in err


def test_warnings_for_a_base_url_without_v1_and_a_key_on_the_command_line(spawn: Any) -> None:
    bridge = spawn(["--upstream", "http://127.0.0.1:9/openai", "--upstream-key", "sk-on-the-cmdline", "--store", "none"])
    code, err = bridge.stop()
    assert code in CLEAN_EXIT, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert any("http://127.0.0.1:9/openai does not end in /v1" in line for line in warnings), err
    assert any("--upstream-key on the command line is visible" in line for line in warnings), err
    assert "sk-on-the-cmdline" not in err


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
    env.update(extra)
    return env


def _run_serve(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=env or _clean_env(PYTHONPATH=str(ROOT)),
    )  # fmt: skip


def _one_line_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--upstream", "127.0.0.1:11434/v1"], ["--upstream", "no http:// or https:// scheme", "http://127.0.0.1:11434/v1"]),
        (["--upstream", "ftp://host/v1"], ["--upstream", "scheme"]),
        (["--upstream", "fixtures", "--store", "postgresql://nosuchhost/db"], ["--store postgresql://nosuchhost/db", "cannot resolve the host"]),
        (["--upstream", "fixtures", "--store", "postgresql://127.0.0.1:9/db"], ["--store postgresql://127.0.0.1:9/db", "Connection refused"]),
        (["--upstream", "fixtures", "--store", "sqlite:////proc/x/y.db"], ["--store sqlite:////proc/x/y.db", "/proc/x does not exist"]),
        (["--upstream", "fixtures", "--store", "sqlite:////proc/y.db"], ["--store sqlite:////proc/y.db", "/proc/y.db"]),
        (["--upstream", "fixtures", "--store", "mongodb://x"], ["--store", "not understood"]),
        (["--upstream", "fixtures", "--upstream-key-file", "/nonexistent/key"], ["--upstream-key-file", "/nonexistent/key"]),
        (["--upstream", "fixtures", "--connect-timeout", "0"], ["timeouts.connect", "positive"]),
        (["--upstream", "fixtures", "--workers", "0"], ["workers must be at least 1"]),
        (["--upstream", "fixtures", "--port", "70000"], ["port must be between 0 and 65535"]),
    ],
)  # fmt: skip
def test_startup_failure_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    _one_line_failure(_run_serve(args), *fragments)


def test_relative_sqlite_path_in_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    result = _run_serve(["--upstream", "fixtures", "--store", "sqlite:///nonexistent/dir/x.db"], cwd=tmp_path)
    _one_line_failure(result, "--store sqlite:///nonexistent/dir/x.db", f"{tmp_path}/nonexistent/dir does not exist")
    assert not (tmp_path / "nonexistent").exists()


def test_missing_asyncpg_is_the_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "asyncpg"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named asyncpg')\n")
    env = _clean_env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    result = _run_serve(["--upstream", "fixtures", "--store", "postgresql://127.0.0.1:5432/test"], env=env)
    _one_line_failure(result, "--store postgresql://127.0.0.1:5432/test", "pip install 'responses-bridge[postgres]'")


def test_port_in_use_fails_before_claiming_to_listen() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run_serve(["--upstream", "fixtures", "--store", "none", "--port", str(port)])
    line = _one_line_failure(result, f"--port {port}", "cannot listen", "in use")
    assert "listening" not in line


def test_version_and_bare_command() -> None:
    from importlib import metadata

    done = subprocess.run([sys.executable, "-m", "server", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.strip() == f"responses-bridge {metadata.version('responses-bridge')}"
    bare = subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert bare.returncode == 2
    assert "usage: responses-bridge" in bare.stderr and "serve" in bare.stderr and "check" in bare.stderr
    assert "run the bridge" in bare.stderr, "the full help, not only the usage error"


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


def test_bad_translator_option_fails_before_workers_start(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("[[upstreams]]\nname = 'local'\nbase_url = 'http://127.0.0.1:9/v1'\n[upstreams.options]\nno_such_option = 1\n")
    result = _run_serve(["--config", str(config), "--workers", "2", "--store", "none"])
    _one_line_failure(result, "upstream local", "no_such_option")
