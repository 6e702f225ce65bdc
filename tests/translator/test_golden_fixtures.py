"""Golden fixtures: every scenario's backend stream, translated, must give what its expected.json says.

The expectations were written by hand from the specification (docs/wire.md §1.5, §3.1, §4), never by
running the translator, so a failure here means the translator and the spec disagree. Each stream
is decoded in random splits (seeded, so a failure is reproducible) because real reads cut frames,
lines, CRLF pairs and UTF-8 sequences anywhere.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from conformance import validate_events
from fixtures import corpus
from fixtures.corpus import check_against_expected, compare_output
from fixtures.replay import SCENARIOS_DIR, assemble, scenario_names
from translator import ChatStreamTranslator, SSEDecoder, chat_completion_to_response

SCENARIOS = scenario_names(SCENARIOS_DIR)
SPLIT_SEEDS = (0, 1, 2, 3)


def load(name: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    scenario = corpus.load(name)
    return scenario.request, scenario.stream, scenario.expected


def random_splits(raw: bytes, seed: int) -> list[bytes]:
    """Cut the bytes at random places; seed 0 feeds one byte at a time (the harshest split)."""
    if seed == 0:
        return [raw[i : i + 1] for i in range(len(raw))]
    rng = random.Random(seed)
    pieces: list[bytes] = []
    start = 0
    while start < len(raw):
        size = rng.randint(1, 64)
        pieces.append(raw[start : start + size])
        start += size
    return pieces


def translate(
    request: dict[str, Any], pieces: list[bytes]
) -> tuple[list[dict[str, Any]], ChatStreamTranslator]:
    """Drive the translator exactly as a server does: start, feed each chunk, finish at [DONE] or EOF."""
    translator = ChatStreamTranslator(request)
    decoder = SSEDecoder()
    events = list(translator.start())
    done_seen = False
    frames: list[tuple[str | None, str]] = []
    for piece in pieces:
        frames.extend(decoder.feed(piece))
    frames.extend(decoder.close())
    for _event, data in frames:
        if data.strip() == "[DONE]":
            done_seen = True
            break
        events.extend(translator.feed(orjson.loads(data)))
    events.extend(translator.finish(done_seen=done_seen))
    return events, translator


def test_corpus_is_complete() -> None:
    """Every scenario folder has its three files, a matching model name and a README naming the evidence."""
    assert len(SCENARIOS) >= 30
    for name in SCENARIOS:
        folder = SCENARIOS_DIR / name
        request, _raw, expected = load(name)
        assert request["model"] == f"fixture:{name}", name
        assert {"status", "incomplete_details", "output", "usage", "event_types"} <= expected.keys(), name
        readme = (folder / "README.md").read_text()
        assert "Evidence:" in readme and "Backend imitated:" in readme, name


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden_stream(name: str) -> None:
    request, raw, expected = load(name)
    for seed in SPLIT_SEEDS:
        events, translator = translate(request, random_splits(raw, seed))
        assert events, name
        final = events[-1].get("response") or {}
        problems = check_against_expected(events, expected)
        assert not problems, f"{name} (split seed {seed}):\n" + "\n".join(problems)
        assert translator.response == final, f"{name}: .response differs from the terminal event's response"
        violations = validate_events(events, request=request)
        assert not violations, f"{name}: " + "\n".join(str(v) for v in violations)


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_events_whatever_the_split(name: str) -> None:
    """Random splits change nothing but ids and timestamps: the event sequence and deltas are identical."""
    request, raw, _expected = load(name)

    def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (e.get("type"), e.get("delta"), e.get("output_index"), e.get("sequence_number")) for e in events
        ]

    whole = shape(translate(request, [raw])[0])
    for seed in SPLIT_SEEDS:
        assert shape(translate(request, random_splits(raw, seed))[0]) == whole, f"{name} seed {seed}"


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in SCENARIOS
        if orjson.loads((SCENARIOS_DIR / n / "expected.json").read_bytes())["status"] != "failed"
    ],
)
def test_whole_answer_agrees_with_stream(name: str) -> None:
    """The fixture backend's non-streamed answer, translated whole, gives the same output as the stream."""
    request, raw, expected = load(name)
    status, completion = assemble(raw, request["model"])
    assert status == 200
    response = chat_completion_to_response(completion, request)
    problems = compare_output(response.get("output") or [], expected)
    if response.get("status") != expected["status"]:
        problems.append(f"status: got {response.get('status')!r}, expected {expected['status']!r}")
    assert not problems, f"{name} (non-streamed):\n" + "\n".join(problems)


def test_translate_catches_a_wrong_expectation() -> None:
    """The comparison itself can fail: a deliberately wrong expectation is reported."""
    request, raw, expected = load("text_openai")
    events, _ = translate(request, [raw])
    wrong = {
        **expected,
        "output": [{"type": "message", "text": "Goodbye"}],
        "event_types": expected["event_types"][:-1],
    }
    problems = check_against_expected(events, wrong)
    assert any("output[0].text" in p for p in problems)
    assert any("event types" in p for p in problems)
