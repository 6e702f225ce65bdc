"""Config loading, model routing and the shipped profiles."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli import build_config
from server.config import PASSTHROUGH, BridgeConfig, ConfigError, Timeouts, Upstream
from server.config_file import list_profiles, load_config, load_profile
from tests.conftest import BridgeHandle
from translator import TranslatorOptions

FULL_EXAMPLE = """
host = "0.0.0.0"
port = 9000
api_keys = ["sk-a", "sk-b"]
store = "memory"
log_format = "json"
max_body_bytes = 1048576
keepalive_interval = 5
shutdown_grace = 3
encryption_key_env = "TEST_BRIDGE_SECRET"

[timeouts]
connect = 2
first_byte = 30
idle = 20

[[upstreams]]
name = "local"
base_url = "http://127.0.0.1:11434/v1/"
profile = "ollama"
models = ["qwen3:8b", "llama3.2"]
[upstreams.aliases]
"gpt-4o-mini" = "qwen3:8b"
[upstreams.options]
think_tags = false

[[upstreams]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
api_key_env = "TEST_GROQ_KEY"
profile = "groq"
prefix = "groq/"

[[upstreams]]
name = "mine"
base_url = "http://10.0.0.5:8000/v1"
api_key = "passthrough"
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return load_config(path, env or {})


def test_full_example_parses(tmp_path: Path) -> None:
    config = _load(tmp_path, FULL_EXAMPLE, {"TEST_BRIDGE_SECRET": "s3cret", "TEST_GROQ_KEY": "gsk_123"})
    assert (config.host, config.port, config.store, config.log_format) == ("0.0.0.0", 9000, "memory", "json")
    assert config.api_keys == ("sk-a", "sk-b")
    assert config.timeouts == Timeouts(connect=2, first_byte=30, idle=20)
    assert (config.max_body_bytes, config.keepalive_interval, config.shutdown_grace) == (1048576, 5, 3)
    assert config.encryption_key == "s3cret"
    local, groq, mine = config.upstreams
    assert local.base_url == "http://127.0.0.1:11434/v1"
    assert local.options["think_tags"] is False, "an upstream override beats its profile"
    assert local.options["reasoning_replay"] == load_profile("ollama").options["reasoning_replay"]
    assert groq.api_key == "gsk_123"
    assert mine.api_key == PASSTHROUGH and mine.passthrough
    assert "gsk_123" in config.secrets and "s3cret" in config.secrets


def test_routing_order(tmp_path: Path) -> None:
    config = _load(tmp_path, FULL_EXAMPLE, {"TEST_BRIDGE_SECRET": "x" * 8, "TEST_GROQ_KEY": "y" * 8})
    route = config.route("gpt-4o-mini")
    assert route is not None and (route.upstream.name, route.model) == ("local", "qwen3:8b")
    route = config.route("groq/llama-3.3-70b")
    assert route is not None and (route.upstream.name, route.model) == ("groq", "llama-3.3-70b")
    route = config.route("llama3.2")
    assert route is not None and route.upstream.name == "local"
    route = config.route("anything-else")
    assert route is not None and (route.upstream.name, route.model) == ("mine", "anything-else")


def test_no_catch_all_means_unknown_models_do_not_route() -> None:
    config = BridgeConfig(upstreams=(Upstream(name="a", base_url="http://x/v1", models=("m1",)),))
    assert config.route("m1") is not None
    assert config.route("m2") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n[[upstreams]]\nbase_url='http://x/v1'", "unknown top-level keys ['colour']"),
        ("[[upstreams]]\nname='a'", "upstreams[0].base_url is required"),
        ("[[upstreams]]\nbase_url='http://x/v1'\nprofile='nope'", "unknown profile 'nope'"),
        ("[[upstreams]]\nbase_url='http://x/v1'\nmodels='a'\nmodles=['b']", "unknown keys ['modles']"),
        ("[[upstreams]]\nbase_url='http://x/v1'\napi_key_env='NOT_SET_ANYWHERE'", "NOT_SET_ANYWHERE"),
        ("log_format = 'xml'\n[[upstreams]]\nbase_url='http://x/v1'", "log_format"),
        ("[timeouts]\nconect = 1\n[[upstreams]]\nbase_url='http://x/v1'", "timeouts: unknown keys"),
        ("port = 'eighty'\n[[upstreams]]\nbase_url='http://x/v1'", "port has the wrong type"),
        ("this is = not toml =", "not valid TOML"),
        ("", "at least one upstream"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)


def test_every_shipped_profile_is_valid_translator_options() -> None:
    names = list_profiles()
    assert {"vllm", "ollama", "llamacpp", "deepseek", "openrouter", "groq", "mistral", "gemini",
            "openai-compatible", "openai"} <= set(names)  # fmt: skip
    for name in names:
        profile = load_profile(name)
        assert profile.description, name
        assert profile.options, name
        TranslatorOptions.from_kwargs(**dict(profile.options))  # raises on a bad name or value


def test_profiles_comment_every_setting() -> None:
    from server.config import PROFILES_DIR

    for path in PROFILES_DIR.glob("*.toml"):
        lines = path.read_text().splitlines()
        in_options = False
        commented = False
        for line in lines:
            if line.strip() == "[options]":
                in_options = True
                continue
            if in_options and line.startswith("#"):
                commented = True
        assert in_options and commented, f"{path.name} explains its settings"


def _args(**values: Any) -> argparse.Namespace:
    base = dict.fromkeys(("upstream", "upstream_key", "host", "port", "api_key", "store", "config",
                          "workers", "profile", "log_format", "keepalive_interval", "max_body_bytes",
                          "encryption_key"))  # fmt: skip
    base.update(values)
    return argparse.Namespace(**base)


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("port = 1111\nstore = 'memory'\n[[upstreams]]\nname='f'\nbase_url='http://file/v1'\n")
    env = {"RESPONSES_BRIDGE_CONFIG": str(path), "RESPONSES_BRIDGE_PORT": "2222"}
    config = build_config(_args(), env)
    assert (config.port, config.store, config.upstreams[0].name) == (2222, "memory", "f")
    config = build_config(_args(port=3333, upstream="http://flag/v1", profile="vllm"), env)
    assert config.port == 3333
    assert [(u.name, u.base_url, u.profile) for u in config.upstreams] == [("default", "http://flag/v1", "vllm")]
    config = build_config(_args(upstream="fixtures"), {"RESPONSES_BRIDGE_API_KEY": "k1, k2"})
    assert config.api_keys == ("k1", "k2")
    with pytest.raises(ConfigError):
        build_config(_args(upstream="fixtures"), {"RESPONSES_BRIDGE_PORT": "eighty"})


# ------------------------------------------------------------------------------ config in effect


def test_profile_options_reach_the_backend(
    make_bridge: Callable[..., BridgeHandle],
    backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:
    handle = make_bridge(upstream={"options": dict(load_profile("mistral").options), "profile": "mistral"})
    clear_backend_requests()
    response = httpx.post(
        handle.url + "/responses",
        json={"model": "fixture-scripted", "input": "@text ok", "instructions": "Be brief.",
              "max_output_tokens": 50, "stream": True, "metadata": {"a": "b"}},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200
    (sent,) = backend_requests()
    assert "stream_options" not in sent, "mistral profile: stream_usage = false"
    assert sent["max_tokens"] == 50
    assert "metadata" not in sent, "mistral profile: openai_fields = false"
    assert sent["messages"][0]["role"] == "system"


def test_passthrough_forwards_callers_key(make_bridge: Callable[..., BridgeHandle], backend_server: Any) -> None:
    from fixtures.backend import create_app
    from tests.support.servers import run_app

    with run_app(create_app(api_key="sk-callers-own")) as keyed:
        handle = make_bridge(upstream={"base_url": keyed.url + "/v1", "api_key": PASSTHROUGH})
        body = {"model": "fixture-scripted", "input": "@text passed"}
        ok = httpx.post(handle.url + "/responses", json=body, headers={"authorization": "Bearer sk-callers-own"},
                        timeout=30)  # fmt: skip
        assert ok.status_code == 200, ok.text
        bad = httpx.post(handle.url + "/responses", json=body, headers={"authorization": "Bearer sk-other"},
                         timeout=30)  # fmt: skip
        assert bad.status_code == 401
        assert "sk-other" not in bad.text


def test_access_log_line_per_request(bridge_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="responses_bridge.access")
    httpx.post(bridge_url + "/responses", json={"model": "fixture-scripted", "input": "@text logged", "stream": True},
               timeout=30)  # fmt: skip
    httpx.post(bridge_url + "/responses", json={"model": "chaos:status-429", "input": "x"}, timeout=30)
    lines = [r.getMessage() for r in caplog.records if r.name == "responses_bridge.access"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("POST /v1/responses 200 model=fixture-scripted upstream=fixture stream=true")
    assert "ttft_ms=-" not in lines[0] and "tokens_in=-" not in lines[0]
    assert lines[1].startswith("POST /v1/responses 429 model=chaos:status-429")


def test_docs_config_example_is_valid(tmp_path: Path) -> None:
    """The full example in docs/server.md parses (docs must not rot)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    env = {"BRIDGE_SECRET": "secret-value", "GROQ_API_KEY": "gsk_test_value"}
    config = _load(tmp_path, example, env)
    assert [u.name for u in config.upstreams] == ["local", "groq", "anything-else"]
    assert config.upstreams[1].headers == {"X-Title": "responses-bridge"}
    route = config.route("groq/llama-3.3-70b-versatile")
    assert route is not None and route.model == "llama-3.3-70b-versatile"


def test_store_retention_setting(tmp_path: Path) -> None:
    config = _load(tmp_path, "store = 'memory'\nstore_retention_days = 30\n[[upstreams]]\nbase_url='http://x/v1'\n")
    assert config.store_retention_days == 30.0
    config = build_config(_args(upstream="fixtures"), {"RESPONSES_BRIDGE_STORE_RETENTION_DAYS": "7.5"})
    assert config.store_retention_days == 7.5
    assert build_config(_args(upstream="fixtures"), {}).store_retention_days is None


def test_retention_task_runs_in_the_lifespan(make_bridge: Callable[..., BridgeHandle]) -> None:
    pytest.importorskip("server.store")
    handle = make_bridge(store="memory", store_retention_days=1.0)
    state = handle.app.state.bridge
    assert state.retention is not None and not state.retention.done()
    handle.stop()
    assert state.retention.done()


# ------------------------------------------------------------------------------ flags, env, file


def test_timeouts_only_file_with_upstream_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[timeouts]\nconnect = 2\nidle = 40\n")
    config = build_config(_args(upstream="http://127.0.0.1:11434/v1", config=str(path)), {})
    assert config.upstreams[0].base_url == "http://127.0.0.1:11434/v1"
    assert config.timeouts == Timeouts(connect=2.0, first_byte=600.0, idle=40.0)
    with pytest.raises(ConfigError, match="at least one upstream"):
        build_config(_args(config=str(path)), {})


def test_timeout_flags_and_env_beat_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[timeouts]\nconnect = 2\nfirst_byte = 30\nidle = 40\n")
    env = {"RESPONSES_BRIDGE_IDLE_TIMEOUT": "7", "RESPONSES_BRIDGE_FIRST_BYTE_TIMEOUT": "8"}
    config = build_config(_args(upstream="fixtures", config=str(path), first_byte_timeout=9.0), env)
    assert config.timeouts == Timeouts(connect=2.0, first_byte=9.0, idle=7.0)
    assert build_config(_args(upstream="fixtures", connect_timeout=1.5), {}).timeouts.connect == 1.5
    with pytest.raises(ConfigError, match="RESPONSES_BRIDGE_IDLE_TIMEOUT: not a valid float"):
        build_config(_args(upstream="fixtures"), {"RESPONSES_BRIDGE_IDLE_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match=r"timeouts\.idle must be a positive"):
        build_config(_args(upstream="fixtures", idle_timeout=-1.0), {})


def test_strict_params_from_flag_env_and_file(tmp_path: Path) -> None:
    assert build_config(_args(upstream="fixtures"), {}).strict_params is False
    assert build_config(_args(upstream="fixtures", strict_params=True), {}).strict_params is True
    for text, expected in (("1", True), ("true", True), ("off", False)):
        env = {"RESPONSES_BRIDGE_STRICT_PARAMS": text}
        assert build_config(_args(upstream="fixtures"), env).strict_params is expected
    with pytest.raises(ConfigError, match="RESPONSES_BRIDGE_STRICT_PARAMS: not a valid boolean"):
        build_config(_args(upstream="fixtures"), {"RESPONSES_BRIDGE_STRICT_PARAMS": "maybe"})
    config = _load(tmp_path, "strict_params = true\n[[upstreams]]\nbase_url = 'http://h/v1'\n")
    assert config.strict_params is True
    with pytest.raises(ConfigError, match="strict_params has the wrong type"):
        _load(tmp_path, "strict_params = 'yes'\n[[upstreams]]\nbase_url = 'http://h/v1'\n")


@pytest.mark.parametrize(
    ("url", "where"),
    [("127.0.0.1:11434/v1", "--upstream"), ("localhost/v1", "--upstream"), ("http:///v1", "--upstream")],
)
def test_upstream_url_without_scheme_or_host_is_a_config_error(url: str, where: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{where}: "):
        build_config(_args(upstream=url), {})
    with pytest.raises(ConfigError, match=r"^RESPONSES_BRIDGE_UPSTREAM: "):
        build_config(_args(), {"RESPONSES_BRIDGE_UPSTREAM": url})
    with pytest.raises(ConfigError, match=r"^upstreams\[0\]\.base_url: "):
        _load(tmp_path, f"[[upstreams]]\nbase_url = '{url}'\n")


def test_base_url_without_v1_is_a_warning_naming_it() -> None:
    from server.config import base_url_warnings

    config = build_config(_args(upstream="https://u:pw@host:8000/openai/"), {})
    [warning] = base_url_warnings(config)
    assert "https://***@host:8000/openai does not end in /v1" in warning and "pw" not in warning
    assert base_url_warnings(build_config(_args(upstream="http://host/v1"), {})) == []
    assert base_url_warnings(build_config(_args(upstream="fixtures"), {})) == []


def test_upstream_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    config = build_config(_args(upstream="http://h/v1", upstream_key_file=str(key)), {})
    assert config.upstreams[0].api_key == "sk-from-file"
    env = {"RESPONSES_BRIDGE_UPSTREAM_KEY_FILE": str(key)}
    assert build_config(_args(upstream="http://h/v1"), env).upstreams[0].api_key == "sk-from-file"
    # a flag beats the environment, whichever form each uses
    assert build_config(_args(upstream="http://h/v1", upstream_key="sk-flag"), env).upstreams[0].api_key == "sk-flag"
    with pytest.raises(ConfigError, match="not both"):
        build_config(_args(upstream="http://h/v1", upstream_key="k", upstream_key_file=str(key)), {})
    with pytest.raises(ConfigError, match=r"^--upstream-key-file: cannot read"):
        build_config(_args(upstream="http://h/v1", upstream_key_file=str(tmp_path / "missing")), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        build_config(_args(upstream="http://h/v1", upstream_key_file=str(tmp_path / "empty")), {})


def test_config_from_env_reads_the_environment_workers_are_given() -> None:
    import server.settings

    env = {"RESPONSES_BRIDGE_UPSTREAM": "fixtures", "RESPONSES_BRIDGE_PORT": "4321", "RESPONSES_BRIDGE_STRICT_PARAMS": "1"}
    config = server.settings.config_from_env(env)
    assert (config.port, config.strict_params, config.upstreams[0].base_url) == (4321, True, "fixtures")


def test_every_setting_has_a_flag() -> None:
    from server.cli import _parser
    from server.settings import SETTINGS

    serve = _parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {option for action in serve._actions for option in action.option_strings}
    assert {s.flag for s in SETTINGS} <= flags


def test_example_config_file_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "bridge.example.toml"
    config = load_config(example, {})
    assert config.host == "127.0.0.1" and config.port == 8080
    assert config.store == "sqlite:///./responses-bridge.db"
    assert config.timeouts.first_byte == 600
    assert [u.name for u in config.upstreams] == ["local"]
    assert config.upstreams[0].base_url == "http://127.0.0.1:11434/v1"
    assert config.upstreams[0].profile == "ollama"
    assert config.strict_params is False
    # and as `serve --config` builds it, with the flags on top
    config = build_config(_args(config=str(example), port=9999), {})
    assert config.port == 9999 and config.upstreams[0].name == "local"
