"""`[limits] upstream_max_output_tokens` through a real bridge: an answer longer than the ceiling
ends `incomplete` (`max_output_tokens`), streamed or whole, and the log names the setting."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import openai

from server.config import Limits
from tests.support.logs import captured

CEILING = 20
WORDS = 200  # the scripted backend streams one word per chunk and counts one token per word
LONG_TEXT = " ".join(f"w{i:03d}" for i in range(WORDS))  # 5 bytes a word with its space


def _client(bridge: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)


def _ceiling_lines(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "upstream_max_output_tokens" in r.getMessage()]


def test_a_streamed_answer_past_the_ceiling_ends_incomplete(make_bridge: Any) -> None:
    bridge = make_bridge(limits=dataclasses.replace(Limits(), upstream_max_output_tokens=CEILING))
    with captured() as records:
        events = list(_client(bridge).responses.create(model="m", input="@text " + LONG_TEXT, stream=True))
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.incomplete_details is not None
    assert final.response.incomplete_details.reason == "max_output_tokens"
    text = final.response.output_text
    assert LONG_TEXT.startswith(text.strip())
    assert CEILING * 4 <= len(text) < CEILING * 4 + 10  # cut at the chunk that passed 20 * 4 bytes
    lines = _ceiling_lines(records)
    assert len(lines) == 1 and final.response.id in lines[0] and "incomplete" in lines[0], lines


def test_a_whole_answer_past_the_ceiling_is_incomplete(make_bridge: Any) -> None:
    bridge = make_bridge(limits=dataclasses.replace(Limits(), upstream_max_output_tokens=CEILING))
    with captured() as records:
        response = _client(bridge).responses.create(model="m", input="@text " + LONG_TEXT)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == LONG_TEXT  # the whole answer arrived already: nothing is dropped
    assert len(_ceiling_lines(records)) == 1


def test_under_the_ceiling_the_same_answer_completes(make_bridge: Any) -> None:
    bridge = make_bridge(limits=dataclasses.replace(Limits(), upstream_max_output_tokens=WORDS * 2))
    client = _client(bridge)
    with captured() as records:
        events = list(client.responses.create(model="m", input="@text " + LONG_TEXT, stream=True))
        assert events[-1].type == "response.completed"
        assert client.responses.create(model="m", input="@text " + LONG_TEXT).status == "completed"
    assert _ceiling_lines(records) == []
