"""Record real llama-server answers as replayable captures (fixtures/captures/llamacpp-<build>/).

    python -m tests.support.llamacpp.record            # needs the build (tests/support/llamacpp/build.sh)

For each capture: the Responses request a client sent (`request.json`), the chat request the bridge's
translator makes of it with the `llamacpp` profile (`chat_request.json`), and llama-server's answer to
that chat request, byte for byte: `chat_stream.sse` for a stream, or `chat_error.json`
(`{"status": ..., "body": ...}`) when it refused before streaming. Ids and timestamps are llama.cpp's
own; nothing is edited afterwards. `expected.json` is not written here: it is written by hand from
tests/support/llamacpp/behaviour.py, so the replay test compares the translator with what the model
is known to say, not with what the translator said once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import BUILD_VERSION, REPO, find_build, run_llama_server
from translator import responses_to_chat_request
from translator.options import TranslatorOptions

CAPTURES_DIR = REPO / "fixtures" / "captures" / f"llamacpp-{BUILD_VERSION}"


def _tool(name: str, parameter: str, description: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {parameter: {"type": "string"}},
            "required": [parameter],
            "additionalProperties": False,
        },
        "strict": True,
    }


WEATHER = _tool("get_weather", "city", "Current weather for a city.")
TIME = _tool("get_time", "city", "Local time in a city.")
CALL = {
    "type": "function_call",
    "call_id": "call_weather_1",
    "name": "get_weather",
    "arguments": json.dumps(behaviour.WEATHER_ARGUMENTS),
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}

# name → (Responses request, what it shows)
CAPTURES: dict[str, tuple[dict[str, Any], str]] = {
    "text_reasoning": (
        {"model": behaviour.MODEL, "input": "Hi there", "stream": True},
        "plain text after a <think> block, split into reasoning_content",
    ),
    "tool_call": (
        {
            "model": behaviour.MODEL,
            "input": "What is the weather in Paris?",
            "tools": [WEATHER],
            "stream": True,
        },
        "one tool call, parsed from <tool_call> markup",
    ),
    "after_tool_result": (
        {
            "model": behaviour.MODEL,
            "input": [
                {"role": "user", "content": "What is the weather in Paris?"},
                CALL,
                {"type": "function_call_output", "call_id": "call_weather_1", "output": "Sunny, 21 C"},
            ],
            "tools": [WEATHER],
            "stream": True,
        },
        "text once the tool result is in the prompt",
    ),
    "tool_choice_required": (
        {
            "model": behaviour.MODEL,
            "input": [
                {"role": "user", "content": "What is the weather in Paris?"},
                CALL,
                {"type": "function_call_output", "call_id": "call_weather_1", "output": "Sunny, 21 C"},
            ],
            "tools": [WEATHER],
            "tool_choice": "required",
            "stream": True,
        },
        "tool_choice required: the grammar forces a call where the model would answer in text",
    ),
    "named_tool_choice_ignored": (
        {
            "model": behaviour.MODEL,
            "input": "What time is it in Paris?",
            "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "name": "get_time"},
            "stream": True,
        },
        "a named tool_choice sent as the object: llama-server treats it as auto, get_weather is called",
    ),
    "tool_choice_none_markup": (
        {
            "model": behaviour.MODEL,
            "input": "Hi there",
            "tools": [WEATHER],
            "tool_choice": "none",
            "stream": True,
        },
        "tool_choice none with the tools sent: the tools stay in the prompt, <tool_call> markup comes as text",
    ),
    "length": (
        {"model": behaviour.MODEL, "input": "Hi there", "max_output_tokens": 16, "stream": True},
        "finish_reason length after 16 tokens (the reasoning counts)",
    ),
    "json_schema": (
        {
            "model": behaviour.MODEL,
            "input": "The largest city of France, as JSON.",
            "text": {
                "format": {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA, "strict": True}
            },
            "stream": True,
        },
        "text.format json_schema, turned into a grammar by llama-server",
    ),
    "context_overflow": (
        {"model": behaviour.MODEL, "input": "hello " * 20_000, "stream": True},
        "a prompt over the context size: 400 exceed_context_size_error before any stream",
    ),
}


# The captures of llama-server's tool_choice quirks show what it does with the choice sent as is, so
# the profile's workarounds for them are switched off there.
NATIVE_TOOL_CHOICE = {"named_tool_choice": "native", "tool_choice_none": "native"}
QUIRK_CAPTURES = {"named_tool_choice_ignored", "tool_choice_none_markup"}


def translator_options(profile: str = "llamacpp", **overrides: Any) -> dict[str, Any]:
    """The profile's options that this translator knows (see tests/e2e/test_llamacpp.py)."""
    from server.config_file import load_profile

    known = {f.name for f in dataclasses.fields(TranslatorOptions)}
    options = {**load_profile(profile).options, **overrides}
    return {k: v for k, v in options.items() if k in known}


def record(name: str, request: dict[str, Any], base_url: str, out_dir: Path) -> str:
    overrides = NATIVE_TOOL_CHOICE if name in QUIRK_CAPTURES else {}
    chat = responses_to_chat_request(request, **translator_options(**overrides))
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    stored_request = dict(request)
    if name == "context_overflow":  # 120 kB of "hello ": store the recipe, the test rebuilds it
        stored_request["input"] = {"repeat": "hello ", "times": 20_000}
        chat_to_store: dict[str, Any] = {**chat, "messages": "(the user message is the request's input)"}
    else:
        chat_to_store = chat
    (folder / "request.json").write_text(json.dumps(stored_request, indent=2) + "\n", encoding="utf-8")
    (folder / "chat_request.json").write_text(json.dumps(chat_to_store, indent=2) + "\n", encoding="utf-8")
    with httpx.stream("POST", base_url + "/chat/completions", json=chat, timeout=300) as answer:
        raw = answer.read()
        if answer.status_code != 200 or not answer.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            error = {"status": answer.status_code, "body": json.loads(raw)}
            (folder / "chat_error.json").write_text(json.dumps(error, indent=2) + "\n", encoding="utf-8")
            return f"{name}: HTTP {answer.status_code}"
    (folder / "chat_stream.sse").write_bytes(raw)
    return f"{name}: {len(raw)} bytes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CAPTURES_DIR)
    parser.add_argument("names", nargs="*", help="captures to (re)record (default: all)")
    args = parser.parse_args(argv)
    build = find_build()
    if build is None:
        print("llama.cpp is not built: run tests/support/llamacpp/build.sh", file=sys.stderr)
        return 2
    names = args.names or list(CAPTURES)
    with tempfile.TemporaryDirectory() as logs, run_llama_server(build, Path(logs)) as server:
        for name in names:
            request, _what = CAPTURES[name]
            print(record(name, request, server.url, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
