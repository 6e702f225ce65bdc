"""Comparing a stream of Responses events with a corpus scenario's ``expected.json``.

The comparison is tolerant exactly where the specification is: extra usage keys, JSON spacing in
arguments, and (per scenario, ``compare`` flags) the number of deltas and surrounding whitespace. The
format of ``expected.json`` is described in fixtures/README.md. Pure; may import: catalogue.
"""

from __future__ import annotations

from typing import Any

import orjson

from conformance.catalogue import OUTPUT_DELTA_TYPES

__all__ = [
    "check_against_expected",
    "collapse",
    "compare_output",
    "compare_usage",
    "same_arguments",
    "simplify",
]


def collapse(types: list[str]) -> list[str]:
    """Runs of one delta event type as one: for scenarios where the spec leaves the number of deltas free."""
    out: list[str] = []
    for kind in types:
        if kind in OUTPUT_DELTA_TYPES and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


def simplify(item: dict[str, Any]) -> dict[str, Any]:
    """The parts of an output item that ``expected.json`` states (see fixtures/README.md)."""
    kind = item.get("type")
    if kind == "message":
        parts = item.get("content") or []
        texts = [p.get("text", "") for p in parts if p.get("type") == "output_text"]
        refusals = [p.get("refusal", "") for p in parts if p.get("type") == "refusal"]
        simple: dict[str, Any] = {"type": "message", "text": "".join(texts), "refusal": "".join(refusals)}
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
    """Arguments compared as JSON values: the spacing a serialiser chooses is not part of the spec."""
    try:
        return bool(orjson.loads(got) == orjson.loads(want))
    except (orjson.JSONDecodeError, TypeError):
        return bool(got == want)


def compare_output(got_items: list[dict[str, Any]], expected: dict[str, Any]) -> list[str]:
    """Differences between an output list and the expected summary, one readable line each."""
    strip = expected.get("compare", {}).get("strip_text", False)
    want_items = expected["output"]
    got = [simplify(item) for item in got_items if isinstance(item, dict)]
    if [g["type"] for g in got] != [w["type"] for w in want_items]:
        return [f"output types {[g['type'] for g in got]} != expected {[w['type'] for w in want_items]}"]
    problems: list[str] = []
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
    """Usage must hold the expected figures; extra keys (cache_write_tokens, …) are allowed."""
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


def check_against_expected(events: list[dict[str, Any]], expected: dict[str, Any]) -> list[str]:
    """Every difference between a stream of Responses events and ``expected.json``."""
    problems: list[str] = []
    types = [e.get("type") for e in events]
    want_types = list(expected["event_types"])
    if expected.get("compare", {}).get("collapse_deltas"):
        types, want_types = collapse(types), collapse(want_types)
    if types != want_types:
        problems.append(f"event types:\n  got      {types}\n  expected {want_types}")
    final = (events[-1].get("response") if events else None) or {}
    if final.get("status") != expected["status"]:
        problems.append(f"status: got {final.get('status')!r}, expected {expected['status']!r}")
    if final.get("incomplete_details") != expected["incomplete_details"]:
        problems.append(
            f"incomplete_details: got {final.get('incomplete_details')!r}, "
            f"expected {expected['incomplete_details']!r}"
        )
    problems += compare_output(final.get("output") or [], expected)
    problems += compare_usage(final.get("usage"), expected["usage"])
    needle = expected.get("error_message_contains")
    if needle is not None:
        message = (final.get("error") or {}).get("message") or ""
        if needle not in message:
            problems.append(f"error.message {message!r} does not contain {needle!r}")
    return problems
