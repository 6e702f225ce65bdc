"""`response_skeleton` (translator/events.py) gives what the field-by-field version it replaced gave,
for requests that set any subset of the echoed fields to any JSON value (the key order too: it is
the order of the Response's JSON)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translator.events import _echo_tools, _num, response_skeleton


def reference_skeleton(request: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """The field-by-field version, as it was before the template one (kept as the reference)."""
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    echo_text: dict[str, Any] = {"format": fmt if isinstance(fmt, dict) else {"type": "text"}}
    if isinstance(text, dict) and text.get("verbosity") is not None:
        echo_text["verbosity"] = text["verbosity"]
    reasoning = request.get("reasoning")
    echo_reasoning = (
        {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")} if isinstance(reasoning, dict) else None
    )
    tool_choice = request.get("tool_choice")
    truncation = request.get("truncation")
    metadata = request.get("metadata")
    service_tier = request.get("service_tier")
    instructions = request.get("instructions")
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": request.get("model") if isinstance(request.get("model"), str) else "",
        "output": [],
        "usage": None,
        "error": None,
        "instructions": instructions if isinstance(instructions, str | list) else None,
        "tools": _echo_tools(request.get("tools")),
        "tool_choice": tool_choice if isinstance(tool_choice, str | dict) else "auto",
        "parallel_tool_calls": bool(request.get("parallel_tool_calls", True)),
        "text": echo_text,
        "temperature": _num(request.get("temperature"), 1.0),
        "top_p": _num(request.get("top_p"), 1.0),
        "presence_penalty": _num(request.get("presence_penalty"), 0.0),
        "frequency_penalty": _num(request.get("frequency_penalty"), 0.0),
        "top_logprobs": _num(request.get("top_logprobs"), 0),
        "truncation": truncation if truncation in ("auto", "disabled") else "disabled",
        "reasoning": echo_reasoning,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "store": bool(request.get("store", True)),
        "background": bool(request.get("background", False)),
        "service_tier": service_tier if isinstance(service_tier, str) else "default",
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "safety_identifier": request.get("safety_identifier"),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    if request.get("user") is not None:
        out["user"] = request["user"]
    return out


FIELDS = ["model", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "temperature", "top_p",
          "presence_penalty", "frequency_penalty", "top_logprobs", "truncation", "reasoning", "max_output_tokens",
          "max_tool_calls", "store", "background", "service_tier", "previous_response_id", "prompt_cache_key",
          "safety_identifier", "metadata", "user", "input", "stream", "id", "include"]  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=5),
                    st.sampled_from(["auto", "disabled", "text", "required"]))  # fmt: skip
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["format", "verbosity", "effort", "summary", "type", "name", "k"]), inner, max_size=3),
    max_leaves=8)  # fmt: skip
TOOLS = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "namespace", "web_search"])},
                                       optional={"name": SCALARS, "parameters": JSON}), max_size=3)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=12), st.one_of(st.none(), TOOLS))
def test_the_template_skeleton_matches_the_field_by_field_one(request: dict[str, Any], tools: Any) -> None:
    if tools is not None:
        request["tools"] = tools
    got = response_skeleton(request, "resp_x", 7)
    assert orjson.dumps(got) == orjson.dumps(reference_skeleton(request, "resp_x", 7))
    assert list(got) == list(reference_skeleton(request, "resp_x", 7))


def test_each_response_gets_its_own_lists_and_dicts() -> None:
    first, second = response_skeleton({}, "resp_a", 1), response_skeleton({}, "resp_b", 1)
    first["output"].append({"id": "x"})
    first["tools"].append({})
    first["metadata"]["k"] = "v"
    first["text"]["format"]["type"] = "json_object"
    assert second["output"] == [] and second["tools"] == [] and second["metadata"] == {}
    assert second["text"] == {"format": {"type": "text"}}
