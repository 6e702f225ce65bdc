"""The README's "Chat Completions clients" section: its TOML is a valid config with both kinds of
upstream, and its library session runs as written (doctest). The section's Python example is run by
tests/e2e/test_readme.py with the other README examples."""

from __future__ import annotations

import doctest
import re
import tomllib
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    return text[text.index("## Chat Completions clients"):]


def test_the_mixed_client_config_parses() -> None:
    from server.config_file import parse_config

    toml = re.search(r"```toml\n(.*?)```", section(), flags=re.S)
    assert toml is not None
    config = parse_config(tomllib.loads(toml.group(1)), env={"OPENAI_API_KEY": "sk-test"})
    assert [u.api for u in config.upstreams] == ["chat", "responses"]
    route = config.route("oa/gpt-5")
    assert route is not None and route.upstream.api == "responses" and route.model == "gpt-5"


def test_the_library_session_runs() -> None:
    session = re.search(r"```pycon\n(.*?)```", section(), flags=re.S)
    assert session is not None
    test = doctest.DocTestParser().get_doctest(session.group(1), {}, "README", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 6
