"""The README's Python examples run as written, against a live bridge in front of the fixture backend.

A user's first contact is the README; an example that has rotted is a bug. Each ```python block is run
in a fresh subprocess with the README's address replaced by the test bridge's, and must exit 0 and print
what the README says it prints.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080/v1"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert all(README_URL in b for b in blocks if "base_url" in b)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index: int, bridge_url: str, tmp_path: Path) -> None:
    code = python_blocks()[index].replace(README_URL, bridge_url.rstrip("/"))
    script = tmp_path / f"example_{index}.py"
    script.write_text(code)
    env = {"PATH": "/usr/bin:/bin", "OPENAI_AGENTS_DISABLE_TRACING": "1", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    if "responses.create" in code:
        assert "Echo: Say hello" in out
    elif "Runner.run_sync" in code:
        assert "sunny in Paris" in out
    elif "ChatStreamTranslator" in code:
        assert out.strip() == "completed ['reasoning', 'message']"
    else:
        pytest.fail(f"README example {index} has no expectation in this test")


def test_readme_says_what_to_install_first() -> None:
    text = README.read_text()
    install = text.index("pip install openai openai-agents")
    assert install < text.index("```python"), "the clients are installed before the first example uses them"
    assert "[postgres]" in text and "/healthz" in text and "--store-retention-days" in text


def test_readme_codex_config_stays_on_the_machine() -> None:
    import tomllib

    text = README.read_text()
    block = re.search(r"```toml\n(model = .*?)```", text, flags=re.S)
    assert block, "the Codex config block"
    config = tomllib.loads(block.group(1))
    assert config["check_for_update_on_startup"] is False
    assert config["web_search"] == "disabled"
    assert config["analytics"]["enabled"] is False and config["feedback"]["enabled"] is False
    assert config["features"]["plugins"] is False and config["features"]["remote_plugin"] is False
    assert config["otel"]["exporter"] == "none"


def test_readme_example_models_are_listed(bridge_url: str) -> None:
    import httpx

    listed = {m["id"] for m in httpx.get(bridge_url.rstrip("/") + "/models", timeout=10).json()["data"]}
    used = set(re.findall(r'model="([^"]+)"', "".join(python_blocks())))
    used |= set(re.findall(r"--model (\S+)", README.read_text()))
    assert used and used <= listed, used - listed
