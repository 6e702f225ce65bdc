"""Every test under tests/e2e/ carries the `e2e` marker (registered in pyproject.toml): real clients
(openai SDK, Agents SDK, Codex CLI, LangChain), real llama.cpp, load, durability, hostile peers.

Marked here by path rather than by a decorator in each file, so a new e2e test is marked without
anyone remembering to: `pytest -m "not e2e"` runs the fast layers, plain `pytest` runs everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llamacpp.launcher import LlamaServer, require_build, run_llama_server

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items, not only this folder's: filter by path.
    for item in items:
        if E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A real llama-server over the tiny test model, one per test module that asks for it (skipped
    without a build, failed under CI: `require_build`)."""
    build = require_build()
    with run_llama_server(build, tmp_path_factory.mktemp("llama-server")) as server:
        yield server
