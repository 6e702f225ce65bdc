"""`responses-bridge check`: the conformance kit pointed at any `/v1/responses` endpoint.

It sends a fixed set of requests that need no particular model answer (text, streaming, instructions,
multi-turn, tool calls, tool output, an image, structured output, bad requests) and validates every
body and stream with :mod:`translator.validate`, so a user gets the same precise report for this bridge,
a router, or a vLLM/Ollama server. Scenarios are plain data (:data:`SCENARIOS`): add one by appending a
:class:`Scenario` with a request builder and, if needed, a check of the final response.

`cli.py` wires :func:`add_arguments` and :func:`run` under `responses-bridge check`; `python -m
server.check` runs the same thing on its own.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import orjson

from translator.validate import PROFILES, Violation, parse_sse, validate_events, validate_response

__all__ = ["SCENARIOS", "Scenario", "ScenarioResult", "add_arguments", "main", "run", "run_scenario"]

DEFAULT_UNKNOWN_MODEL = "responses-bridge-check-no-such-model"

#: Rules check adds on top of the validator's (HTTP-level and per-scenario expectations).
CHECK_RULES: dict[str, str] = {
    "http-status": "the endpoint answers 200 to a good request and 4xx to a bad one",
    "content-type": "JSON bodies are application/json, streams text/event-stream",
    "json-body": "a non-streaming body is one JSON object",
    "error-shape": "errors use OpenAI's envelope {error: {message, type, param, code}}",
    "scenario": "the answer has what the scenario asked for (a text, a tool call, JSON, …)",
    "transport": "the request completed (no connection error or timeout)",
    "sdk-accumulator": "the openai SDK's stream accumulator (ResponseStreamState) accepts the stream, when openai is installed",
}

# --------------------------------------------------------------------------------------------------
# scenario data


def _tiny_png() -> str:
    """A 1x1 red PNG as a data URL, built here so it is certainly a valid image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    png += chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
# the directive line makes the project's scripted fixture backend call the tool; real models read the question
TOOL_PROMPT = '@call get_weather {"city": "Paris"}\nWhat is the weather in Paris? Use the get_weather tool.'
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def _text(model: str) -> dict:
    return {"model": model, "input": "Say hello in one short sentence."}


def _instructions(model: str) -> dict:
    return {
        "model": model,
        "instructions": "You are a terse assistant. Answer in one sentence.",
        "input": "Hi!",
    }


def _multi_turn(model: str) -> dict:
    return {
        "model": model,
        "input": [
            {"role": "user", "content": "My name is Ada."},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Nice to meet you, Ada.", "annotations": []}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
        ],
    }


def _tool_call(model: str) -> dict:
    return {"model": model, "input": TOOL_PROMPT, "tools": [WEATHER_TOOL], "tool_choice": "required"}


def _tool_output(model: str) -> dict:
    return {
        "model": model,
        "tools": [WEATHER_TOOL],
        "input": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_check_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_check_1", "output": '{"temperature_c": 18}'},
        ],
    }


def _image(model: str) -> dict:
    return {
        "model": model,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What colour is this image?"},
                    {"type": "input_image", "image_url": _tiny_png(), "detail": "low"},
                ],
            }
        ],
    }


def _structured(model: str) -> dict:
    return {
        "model": model,
        "input": "Give the largest city of France and its population as JSON.",
        "text": {"format": {"type": "json_schema", "name": "city", "schema": ANSWER_SCHEMA, "strict": True}},
    }


def _bad_request(model: str) -> dict:
    return {"model": model, "input": 42}  # input must be a string or a list of items


# checks of the final response: return what is wrong (empty = fine)


def _list(value: Any) -> list:
    """A list field of an untrusted body, or [] (the validator reports wrong types; expectations skip them)."""
    return value if isinstance(value, list) else []


def _output_text(response: dict) -> str:
    return "".join(
        part["text"]
        for item in _list(response.get("output"))
        if isinstance(item, dict) and item.get("type") == "message"
        for part in _list(item.get("content"))
        if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
    )


def _expect_text(response: dict) -> list[str]:
    problems = [] if _output_text(response).strip() else ["the response has no output_text"]
    if response.get("status") != "completed":
        problems.append(f"status is {response.get('status')!r}, expected 'completed'")
    return problems


def _expect_tool_call(response: dict) -> list[str]:
    calls = [
        i for i in _list(response.get("output")) if isinstance(i, dict) and i.get("type") == "function_call"
    ]
    if not calls:
        return ["tool_choice 'required' but the output has no function_call"]
    problems = []
    for call in calls:
        if call.get("name") != "get_weather":
            problems.append(f"function_call names {call.get('name')!r}, not a declared tool")
        arguments = call.get("arguments")
        try:
            if not isinstance(arguments, str) or not isinstance(json.loads(arguments), dict):
                problems.append("function_call arguments are not a JSON object")
        except ValueError:
            problems.append(f"function_call arguments are not JSON: {call.get('arguments')!r}")
    if response.get("status") != "completed":
        problems.append(
            f"status is {response.get('status')!r}; a response ending in tool calls is 'completed'"
        )
    return problems


def _expect_json(response: dict) -> list[str]:
    problems = _expect_text(response)
    text = _output_text(response)
    try:
        value = json.loads(text)
    except ValueError:
        return [*problems, f"structured output is not JSON: {text[:80]!r}"]
    if not isinstance(value, dict):
        return [*problems, "structured output is not a JSON object"]
    missing = [k for k in ANSWER_SCHEMA["required"] if k not in value]
    if missing:
        problems.append(f"structured output lacks required key(s) {missing}")
    return problems


@dataclass(frozen=True)
class Scenario:
    """One request sent to the endpoint and what must come back.

    ``expect_status`` "ok" means a 200 with a valid Response (or stream); "client-error" means a 4xx in
    OpenAI's error envelope, with ``param`` named when ``expect_param`` is set.
    """

    name: str
    description: str
    build: Callable[[str], dict]
    stream: bool = False
    expect: Callable[[dict], list[str]] | None = None
    expect_status: str = "ok"
    expect_param: bool = False
    unknown_model: bool = False
    # a 200 with a valid Response is "skip", not "fail": a catch-all endpoint (one backend for any model
    # name) has no unknown model, and the check cannot tell it from one that ignores the model field
    skip_if_accepted: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("text", "plain text, not streamed", _text, expect=_expect_text),
    Scenario("text-stream", "plain text, streamed", _text, stream=True, expect=_expect_text),
    Scenario("instructions", "system prompt via instructions", _instructions, expect=_expect_text),
    Scenario(
        "instructions-stream", "system prompt via instructions, streamed", _instructions, True, _expect_text
    ),
    Scenario("multi-turn", "input list with an assistant turn", _multi_turn, expect=_expect_text),
    Scenario("tool-call", "function tool, tool_choice required", _tool_call, expect=_expect_tool_call),
    Scenario(
        "tool-call-stream",
        "function tool, tool_choice required, streamed",
        _tool_call,
        True,
        _expect_tool_call,
    ),
    Scenario(
        "tool-output", "function_call + function_call_output round trip", _tool_output, expect=_expect_text
    ),
    Scenario("tool-output-stream", "tool output round trip, streamed", _tool_output, True, _expect_text),
    Scenario("image-input", "inline PNG data URL", _image, expect=_expect_text),
    Scenario("structured-output", "text.format json_schema", _structured, expect=_expect_json),
    Scenario("structured-output-stream", "json_schema, streamed", _structured, True, _expect_json),
    Scenario(
        "bad-request",
        "input of the wrong type",
        _bad_request,
        expect_status="client-error",
        expect_param=True,
    ),
    Scenario(
        "unknown-model",
        "a model the endpoint does not serve",
        _text,
        expect_status="client-error",
        unknown_model=True,
        skip_if_accepted=True,
    ),
)


# --------------------------------------------------------------------------------------------------
# running


@dataclass
class ScenarioResult:
    """The outcome of one scenario: ``result`` is pass, fail (violations), error (no answer) or skip."""

    name: str
    description: str
    stream: bool
    result: str = "pass"
    status_code: int | None = None
    duration_ms: int = 0
    events: int | None = None
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "stream": self.stream,
            "result": self.result,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "events": self.events,
            "violations": [v.to_dict() for v in self.violations],
            "error": self.error,
        }


def _error_shape(body: Any, *, need_param: bool) -> list[Violation]:
    """OpenAI's error envelope (REFERENCE §1.9): {"error": {"message", "type", "param", "code"}}."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return [Violation(None, "error-shape", f"body is not {{error: {{…}}}}: {_excerpt(body)}")]
    out = []
    missing = [k for k in ("message", "type", "param", "code") if k not in error]
    if missing:
        out.append(Violation(None, "error-shape", f"error object lacks key(s) {', '.join(missing)}"))
    if not isinstance(error.get("message"), str) or not error.get("message"):
        out.append(Violation(None, "error-shape", "error.message must be a non-empty string"))
    if "type" in error and not isinstance(error["type"], str):
        out.append(
            Violation(None, "error-shape", f"error.type must be a string, got {_excerpt(error['type'])}")
        )
    if need_param and not (isinstance(error.get("param"), str) and error["param"]):
        out.append(
            Violation(
                None,
                "error-shape",
                f"error.param should name the bad parameter, got {_excerpt(error.get('param'))}",
            )
        )
    return out


def _excerpt(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_body(response: httpx.Response) -> tuple[Any, list[Violation]]:
    try:
        return orjson.loads(response.content), []
    except orjson.JSONDecodeError:
        message = f"HTTP {response.status_code} body is not JSON: {_excerpt(response.text)}"
        return None, [Violation(None, "json-body", message)]


def run_scenario(
    client: httpx.Client, url: str, scenario: Scenario, model: str, *, profile: str, unknown_model: str
) -> ScenarioResult:
    """Send one scenario and validate what comes back; never raises for the endpoint's faults."""
    result = ScenarioResult(scenario.name, scenario.description, scenario.stream)
    request = scenario.build(unknown_model if scenario.unknown_model else model)
    if scenario.stream:
        request["stream"] = True
    started = time.monotonic()
    try:
        if scenario.stream:
            with client.stream("POST", url, json=request) as response:
                raw = response.read()
        else:
            response = client.post(url, json=request)
            raw = response.content
    except httpx.HTTPError as exc:
        result.result, result.error = "error", f"{type(exc).__name__}: {exc}"
        result.violations.append(Violation(None, "transport", result.error))
        return result
    finally:
        result.duration_ms = int((time.monotonic() - started) * 1000)
    result.status_code = response.status_code
    content_type = response.headers.get("content-type", "")
    violations = result.violations

    if scenario.expect_status == "client-error":
        if response.status_code == 200 and scenario.skip_if_accepted:
            # the body is whatever the model said; its shape is covered by the other scenarios
            result.result = "skip"
            result.error = "the endpoint answered 200 (it routes any model name); nothing to check"
            return result
        if not 400 <= response.status_code < 500:
            violations.append(
                Violation(
                    None,
                    "http-status",
                    f"expected a 4xx for {scenario.description}, got {response.status_code}",
                )
            )
        else:
            body, problems = _json_body(response)
            violations += problems or _error_shape(body, need_param=scenario.expect_param)
    elif response.status_code != 200:
        violations.append(
            Violation(None, "http-status", f"HTTP {response.status_code}: {_excerpt(response.text)}")
        )
    elif scenario.stream:
        if not content_type.startswith("text/event-stream"):
            violations.append(Violation(None, "sse-content-type", f"Content-Type is {content_type!r}"))
        # OpenAI's API ends streams without [DONE]; Open Responses requires it (REFERENCE §1.1)
        events, framing = parse_sse(raw, require_done=profile == "openresponses")
        result.events = len(events)
        violations += framing
        violations += validate_events(events, request, profile=profile)
        sdk_problem = sdk_accumulator_problem(events)
        if sdk_problem:
            violations.append(sdk_problem)
        terminal = next((e for e in reversed(events) if str(e.get("type", "")).startswith("response.")), None)
        final = terminal.get("response") if terminal and terminal.get("type") in _TERMINAL_TYPES else None
        if scenario.expect and isinstance(final, dict):
            violations += [Violation(None, "scenario", p) for p in scenario.expect(final)]
    else:
        if not content_type.startswith("application/json"):
            violations.append(Violation(None, "content-type", f"Content-Type is {content_type!r}"))
        body, problems = _json_body(response)
        violations += problems
        if body is not None:
            violations += validate_response(body, profile=profile, request=request)
            if scenario.expect and isinstance(body, dict):
                violations += [Violation(None, "scenario", p) for p in scenario.expect(body)]
    if violations:
        result.result = "fail"
    return result


_TERMINAL_TYPES = ("response.completed", "response.incomplete", "response.failed")


def sdk_accumulator_problem(events: list[dict]) -> Violation | None:
    """What the openai SDK's own stream accumulator raises on these events, or None.

    The validator states the SDK's rules; this runs the real thing, so a report can say "the official
    SDK fails on your stream with IndexError". Optional: without the openai package (a test
    dependency, not a runtime one) nothing is checked. It uses the SDK's private module layout, which
    is why any import problem just turns the check off.
    """
    try:
        import openai
        from openai import omit
        from openai._models import construct_type_unchecked
        from openai.lib.streaming.responses._responses import ResponseStreamState
        from openai.types.responses import ResponseStreamEvent
    except ImportError:
        return None
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for position, event in enumerate(events):
        try:
            state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=event))
        except Exception as exc:  # whatever the SDK raises is the finding
            message = f"openai {openai.__version__} ResponseStreamState raises {type(exc).__name__}: {exc}"
            return Violation(position, "sdk-accumulator", message)
    return None


def select_scenarios(names: Sequence[str] | None, skip: Sequence[str] | None) -> list[Scenario]:
    """The scenarios to run, in catalogue order; unknown names raise ValueError."""
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in [*(names or ()), *(skip or ())] if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    return [s for s in chosen if s.name not in (skip or ())]


# --------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `check` flags (cli.py adds them to its subcommand)."""
    parser.add_argument("--base-url", required=False, default=os.environ.get("RESPONSES_BRIDGE_CHECK_BASE_URL"),
                        help="the endpoint's base URL, e.g. http://127.0.0.1:8080/v1 (POSTs go to {base}/responses)")  # fmt: skip
    parser.add_argument("--model", default=os.environ.get("RESPONSES_BRIDGE_CHECK_MODEL"),
                        help="a model the endpoint serves")  # fmt: skip
    parser.add_argument("--api-key", default=None,
                        help="sent as Authorization: Bearer (default: $RESPONSES_BRIDGE_CHECK_API_KEY)")  # fmt: skip
    parser.add_argument("--scenario", action="append", metavar="NAME", dest="scenarios",
                        help="run only this scenario (repeatable); see --list")  # fmt: skip
    parser.add_argument("--skip", action="append", metavar="NAME", default=None,
                        help="leave this scenario out (repeatable)")  # fmt: skip
    parser.add_argument("--profile", choices=PROFILES, default="openai",
                        help="openai (default) or openresponses (adds Open Responses' stricter rules)")  # fmt: skip
    parser.add_argument("--unknown-model", default=DEFAULT_UNKNOWN_MODEL,
                        help="the model name the unknown-model scenario sends")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON report on stdout")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the selected scenarios; 0 when all pass, 1 on any violation or failure, 2 on bad usage."""
    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(args, "list", False):
        for s in SCENARIOS:
            out.write(f"{s.name:<26} {'stream' if s.stream else '      '} {s.description}\n")
        return 0
    if not args.base_url or not args.model:
        err.write("check: --base-url and --model are required\n")
        return 2
    try:
        scenarios = select_scenarios(args.scenarios, getattr(args, "skip", None))
    except ValueError as exc:
        err.write(f"check: {exc}\n")
        return 2
    # never $OPENAI_API_KEY: check is pointed at third-party endpoints, which must not receive that key
    api_key = args.api_key or os.environ.get("RESPONSES_BRIDGE_CHECK_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = args.base_url.rstrip("/") + "/responses"
    profile = getattr(args, "profile", "openai")
    unknown_model = getattr(args, "unknown_model", DEFAULT_UNKNOWN_MODEL)
    results: list[ScenarioResult] = []
    progress = _Progress(err, len(scenarios))
    with httpx.Client(timeout=args.timeout, headers=headers) as client:
        for scenario in scenarios:
            progress.start(scenario.name)
            result = run_scenario(
                client, url, scenario, args.model, profile=profile, unknown_model=unknown_model
            )
            results.append(result)
            progress.done(result)
    progress.close()
    report = make_report(args.base_url, args.model, profile, results)
    if args.json:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(format_table(results) + "\n")
        summary = report["summary"]
        out.write(f"\n{summary['passed']} passed, {summary['failed']} failed, {summary['errors']} errors, "
                  f"{summary['skipped']} skipped "
                  f"({summary['violations']} violations) against {url} with model {args.model}\n")  # fmt: skip
    return 0 if report["passed"] else 1


def make_report(base_url: str, model: str, profile: str, results: list[ScenarioResult]) -> dict[str, Any]:
    """The --json report (documented in docs/conformance.md)."""
    return {
        "base_url": base_url,
        "model": model,
        "profile": profile,
        "passed": all(r.result in ("pass", "skip") for r in results),
        "summary": {
            "scenarios": len(results),
            "passed": sum(r.result == "pass" for r in results),
            "failed": sum(r.result == "fail" for r in results),
            "errors": sum(r.result == "error" for r in results),
            "skipped": sum(r.result == "skip" for r in results),
            "violations": sum(len(r.violations) for r in results),
        },
        "scenarios": [r.to_dict() for r in results],
    }


def format_table(results: list[ScenarioResult], *, first: int = 3, width: int = 110) -> str:
    """scenario | result | violations | first violations: one per distinct rule, so the table shows
    what kinds of things are wrong rather than the same rule on events 1, 2 and 3."""
    name_w = max([len("scenario"), *(len(r.name) for r in results)])
    lines = [f"{'scenario':<{name_w}}  {'result':<6}  {'viol.':>5}  first violations", "-" * min(width, 100)]
    for r in results:
        distinct: dict[str, Violation] = {}
        for v in r.violations:
            distinct.setdefault(v.rule, v)
        shown = [str(v) for v in list(distinct.values())[:first]]
        others = sorted(set(distinct) - {v.rule for v in list(distinct.values())[:first]})
        if others:
            shown.append(f"… also: {', '.join(others)}")
        head = f"{r.name:<{name_w}}  {r.result.upper():<6}  {len(r.violations):>5}  "
        if not shown and r.result == "skip" and r.error:
            shown = [r.error]
        lines.append(head + (_cut(shown[0], width - len(head)) if shown else ""))
        lines += [" " * len(head) + _cut(s, width - len(head)) for s in shown[1:]]
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    width = max(width, 30)
    return text if len(text) <= width else text[: width - 1] + "…"


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, one line per scenario otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.count = 0
        self.tty = stream.isatty() if hasattr(stream, "isatty") else False

    def start(self, name: str) -> None:
        self.count += 1
        if self.tty:
            self.stream.write(f"\r\x1b[K[{self.count}/{self.total}] {name} …")
            self.stream.flush()

    def done(self, result: ScenarioResult) -> None:
        line = f"[{self.count}/{self.total}] {result.name}: {result.result} ({result.duration_ms} ms)"
        self.stream.write(f"\r\x1b[K{line}" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m server.check …` (the same flags as `responses-bridge check`)."""
    parser = argparse.ArgumentParser(
        prog="responses-bridge check",
        description="Validate any /v1/responses endpoint against the Responses API contract.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
