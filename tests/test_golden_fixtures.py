"""Golden fixtures: every scenario's backend stream, translated, must give what its expected.json says.

The expectations were written by hand from the specification (REFERENCE §1.5, §3.1, §4), never by
running the translator, so a failure here means the translator and the spec disagree. Each stream
is decoded in random splits (seeded, so a failure is reproducible) because real reads cut frames,
lines, CRLF pairs and UTF-8 sequences anywhere.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from fixtures.replay import SCENARIOS_DIR, assemble, scenario_names
from translator import ChatStreamTranslator, SSEDecoder, chat_completion_to_response
from translator.validate import validate_events

SCENARIOS = scenario_names(SCENARIOS_DIR)
SPLIT_SEEDS = (0, 1, 2, 3)


def load(name: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    folder = SCENARIOS_DIR / name
    request = orjson.loads((folder / "request.json").read_bytes())
    expected = orjson.loads((folder / "expected.json").read_bytes())
    return request, (folder / "chat_stream.sse").read_bytes(), expected


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


def collapse(types: list[str]) -> list[str]:
    """Runs of the same delta event type as one: used where the spec leaves the number of deltas free."""
    out: list[str] = []
    for kind in types:
        if kind.endswith(".delta") and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


def simplify(item: dict[str, Any]) -> dict[str, Any]:
    """The parts of an output item that expected.json states (see fixtures/README.md)."""
    kind = item.get("type")
    if kind == "message":
        texts = [p.get("text", "") for p in item.get("content", []) if p.get("type") == "output_text"]
        simple: dict[str, Any] = {"type": "message", "text": "".join(texts)}
    elif kind == "reasoning":
        summary = "".join(p.get("text", "") for p in item.get("summary") or [])
        content = "".join(p.get("text", "") for p in item.get("content") or [])
        simple = {"type": "reasoning", "text": summary or content}
    elif kind == "function_call":
        simple = {k: item.get(k) for k in ("type", "name", "arguments", "call_id")}
    elif kind == "custom_tool_call":
        simple = {k: item.get(k) for k in ("type", "name", "input", "call_id")}
    else:
        simple = {"type": kind}
    simple["status"] = item.get("status")
    return simple


def same_arguments(got: Any, want: Any) -> bool:
    """Arguments compared as JSON values: spacing chosen by a serialiser is not part of the spec."""
    try:
        return orjson.loads(got) == orjson.loads(want)
    except (orjson.JSONDecodeError, TypeError):
        return got == want


def compare_output(got_items: list[dict[str, Any]], expected: dict[str, Any]) -> list[str]:
    """Differences between the final output and the expected summary, as readable lines."""
    strip = expected.get("compare", {}).get("strip_text", False)
    want_items = expected["output"]
    problems: list[str] = []
    got = [simplify(item) for item in got_items]
    if [g["type"] for g in got] != [w["type"] for w in want_items]:
        return [f"output types {[g['type'] for g in got]} != expected {[w['type'] for w in want_items]}"]
    for index, (g, w) in enumerate(zip(got, want_items, strict=True)):
        for key, want in w.items():
            have = g.get(key)
            if key == "arguments":
                ok = same_arguments(have, want)
            elif key == "text" and strip:
                ok = isinstance(have, str) and have.strip() == want.strip()
            else:
                ok = have == want
            if not ok:
                problems.append(f"output[{index}].{key}: got {have!r}, expected {want!r}")
    return problems


def compare_usage(got: Any, want: Any) -> list[str]:
    """Usage must contain the expected figures (extra keys such as cache_write_tokens are allowed)."""
    if want is None:
        return [] if got is None else [f"usage: got {got!r}, expected null"]
    if not isinstance(got, dict):
        return [f"usage: got {got!r}, expected {want!r}"]
    problems: list[str] = []
    for key, value in want.items():
        if isinstance(value, dict):
            sub = got.get(key) if isinstance(got.get(key), dict) else {}
            problems += [
                f"usage.{key}.{k}: got {sub.get(k)!r}, expected {v!r}"
                for k, v in value.items()
                if sub.get(k) != v
            ]
        elif got.get(key) != value:
            problems.append(f"usage.{key}: got {got.get(key)!r}, expected {value!r}")
    return problems


def check_against_expected(
    events: list[dict[str, Any]], final: dict[str, Any], expected: dict[str, Any]
) -> list[str]:
    problems: list[str] = []
    types = [e.get("type") for e in events]
    want_types = expected["event_types"]
    if expected.get("compare", {}).get("collapse_deltas"):
        types, want_types = collapse(types), collapse(want_types)
    if types != want_types:
        problems.append(f"event types:\n  got      {types}\n  expected {want_types}")
    if final.get("status") != expected["status"]:
        problems.append(f"status: got {final.get('status')!r}, expected {expected['status']!r}")
    if final.get("incomplete_details") != expected["incomplete_details"]:
        problems.append(
            f"incomplete_details: got {final.get('incomplete_details')!r}, expected {expected['incomplete_details']!r}"
        )
    problems += compare_output(final.get("output") or [], expected)
    problems += compare_usage(final.get("usage"), expected["usage"])
    needle = expected.get("error_message_contains")
    if needle is not None:
        message = (final.get("error") or {}).get("message") or ""
        if needle not in message:
            problems.append(f"error.message {message!r} does not contain {needle!r}")
    return problems


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
        problems = check_against_expected(events, final, expected)
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


def test_translate_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The comparison itself can fail: a deliberately wrong expectation is reported."""
    request, raw, expected = load("text_openai")
    events, _ = translate(request, [raw])
    wrong = {
        **expected,
        "output": [{"type": "message", "text": "Goodbye"}],
        "event_types": expected["event_types"][:-1],
    }
    problems = check_against_expected(events, events[-1]["response"], wrong)
    assert any("output[0].text" in p for p in problems)
    assert any("event types" in p for p in problems)
