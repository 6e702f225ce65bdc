"""`responses-bridge check`: the conformance kit pointed at any `/v1/responses` endpoint.

It sends the requests of :mod:`conformance.scenarios` (text, streaming, instructions, multi-turn, tool
calls, tool output, an image, structured output, bad requests) and judges every body and stream with
the kit's rules (:mod:`conformance.sse`, :mod:`conformance.events`, :mod:`conformance.response`, and
the openai SDK's own accumulator, :mod:`conformance.sdk`), so a user gets the same precise report for
this bridge, a router, or a vLLM/Ollama server.

Before the scenarios, one probe request tells an unusable endpoint (nothing listening, a base URL
without its ``/v1``) from a non-conforming one: the former is one line and exit status 2, not fourteen
identical failures. `responses-bridge check` wires :func:`add_arguments` and :func:`run`;
``python -m conformance.check`` runs the same thing on its own. May import: every other module of the
kit, httpx, orjson; never the bridge's server or translator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import orjson

from conformance.catalogue import TERMINAL_EVENT_TYPES
from conformance.chat import accumulate_chunks, parse_chat_sse, validate_chat_completion, validate_chat_stream
from conformance.events import validate_events
from conformance.response import validate_response
from conformance.rules import PROFILES, Violation
from conformance.scenarios import CHAT_SCENARIOS, SCENARIOS, Scenario, select_chat_scenarios, select_scenarios
from conformance.sdk import sdk_accumulator_problem
from conformance.sse import parse_sse

__all__ = [
    "SCENARIOS",
    "Scenario",
    "ScenarioResult",
    "add_arguments",
    "format_scenario_list",
    "main",
    "probe",
    "run",
    "run_chat_scenario",
    "run_scenario",
    "select_scenarios",
]

DEFAULT_UNKNOWN_MODEL = "responses-bridge-check-no-such-model"

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
    """OpenAI's error envelope (docs/wire.md §1.9): {"error": {"message", "type", "param", "code"}}."""
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


def _send(
    client: httpx.Client, url: str, scenario: Scenario, model: str, unknown_model: str
) -> tuple[ScenarioResult, dict[str, Any], httpx.Response | None, bytes]:
    """Send one scenario's request (streamed or whole) and time it: the result so far, the request
    sent, the response and its body. On a transport failure the result already says so and the response is None."""
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
        return result, request, None, b""
    finally:
        result.duration_ms = int((time.monotonic() - started) * 1000)
    result.status_code = response.status_code
    return result, request, response, raw


def _status_judged(result: ScenarioResult, response: httpx.Response, scenario: Scenario) -> bool:
    """The checks a status alone decides, the same for both APIs; True when the body is not to be
    judged further. A client-error scenario wants a 4xx with an error body of OpenAI's shape (one the
    endpoint answered 200 because it routes any model name is skipped: its body is whatever the model
    said, and the other scenarios cover its shape); any other scenario wants a 200."""
    violations = result.violations
    status = response.status_code
    if scenario.expect_status == "client-error":
        if status == 200 and scenario.skip_if_accepted:
            result.result = "skip"
            result.error = "the endpoint answered 200 (it routes any model name); nothing to check"
        elif not 400 <= status < 500:
            violations.append(Violation(None, "http-status", f"expected a 4xx for {scenario.description}, got {status}"))
        else:
            body, problems = _json_body(response)
            violations += problems or _error_shape(body, need_param=scenario.expect_param)
        return True
    if status != 200:
        violations.append(Violation(None, "http-status", f"HTTP {status}: {_excerpt(response.text)}"))
        return True
    return False


def _verdict(result: ScenarioResult) -> ScenarioResult:
    if result.violations:
        result.result = "fail"
    return result


def run_scenario(
    client: httpx.Client, url: str, scenario: Scenario, model: str, *, profile: str, unknown_model: str
) -> ScenarioResult:
    """Send one scenario and validate what comes back; never raises for the endpoint's faults."""
    result, request, response, raw = _send(client, url, scenario, model, unknown_model)
    if response is None:
        return result
    content_type = response.headers.get("content-type", "")
    violations = result.violations
    if _status_judged(result, response, scenario):
        return _verdict(result)
    if scenario.stream:
        if not content_type.startswith("text/event-stream"):
            violations.append(Violation(None, "sse-content-type", f"Content-Type is {content_type!r}"))
        # OpenAI's API ends streams without [DONE]; Open Responses requires it (docs/wire.md §1.1)
        events, framing = parse_sse(raw, require_done=profile == "openresponses")
        result.events = len(events)
        violations += framing
        violations += validate_events(events, request, profile=profile)
        sdk_problem = sdk_accumulator_problem(events)
        if sdk_problem:
            violations.append(sdk_problem)
        terminal = next((e for e in reversed(events) if str(e.get("type", "")).startswith("response.")), None)
        final = (
            terminal.get("response") if terminal and terminal.get("type") in TERMINAL_EVENT_TYPES else None
        )
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
    return _verdict(result)


def _chat_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion in the shape `accumulate_chunks` gives a stream (choice 0)."""
    choices = body.get("choices") if isinstance(body.get("choices"), list) else []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    calls = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) and isinstance(call.get("function"), dict) else {}
        calls.append({"id": call.get("id") if isinstance(call, dict) else None, "name": fn.get("name"),
                      "arguments": fn.get("arguments")})
    return {"content": message.get("content"), "reasoning_content": message.get("reasoning_content"),
            "tool_calls": calls, "finish_reason": choice.get("finish_reason"), "usage": body.get("usage"),
            "error": body.get("error")}


def run_chat_scenario(
    client: httpx.Client, url: str, scenario: Scenario, model: str, *, unknown_model: str
) -> ScenarioResult:
    """`run_scenario` for a `/v1/chat/completions` endpoint, judged by the chunk grammar."""
    result, request, response, raw = _send(client, url, scenario, model, unknown_model)
    if response is None:
        return result
    content_type = response.headers.get("content-type", "")
    violations = result.violations
    if _status_judged(result, response, scenario):
        return _verdict(result)
    if scenario.stream:
        if not content_type.startswith("text/event-stream"):
            violations.append(Violation(None, "sse-content-type", f"Content-Type is {content_type!r}"))
        chunks, _done, _framing = parse_chat_sse(raw)
        result.events = len(chunks)
        violations += validate_chat_stream(raw, request)
        answer = accumulate_chunks(chunks)
        if answer["error"] is not None:
            violations.append(Violation(None, "scenario", f"the stream ended in an error: {_excerpt(answer['error'])}"))
        elif scenario.expect:
            violations += [Violation(None, "scenario", p) for p in scenario.expect(answer)]
    else:
        if not content_type.startswith("application/json"):
            violations.append(Violation(None, "content-type", f"Content-Type is {content_type!r}"))
        body, problems = _json_body(response)
        violations += problems
        if isinstance(body, dict):
            violations += validate_chat_completion(body)
            if scenario.expect:
                violations += [Violation(None, "scenario", p) for p in scenario.expect(_chat_answer(body))]
    return _verdict(result)


# --------------------------------------------------------------------------------------------------
# the probe: is there a Responses endpoint at this URL at all?


def base_url_problem(base_url: str) -> str | None:
    """Why ``base_url`` cannot be an endpoint's base URL, or None (checked before any request)."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        return f"--base-url {base_url!r} is not a URL ({exc})"
    if url.scheme not in ("http", "https") or not url.host:
        return f"--base-url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1; got {base_url!r}"
    return None


def _is_about_the_model(reply: httpx.Response, model: str) -> bool:
    """A 404 that names the model (OpenAI answers model_not_found so): the route exists."""
    try:
        error = orjson.loads(reply.content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    message = error.get("message")
    return error.get("code") == "model_not_found" or (isinstance(message, str) and model in message)


def probe(client: httpx.Client, base_url: str, model: str, api: str = "responses") -> str | None:
    """One request before the scenarios; a one-line reason the endpoint cannot be checked, or None.

    It sends the bad-request scenario's body (``input`` of the wrong type), which a conforming endpoint
    answers 400 without running a model. Only two answers stop the check: no connection at all, and a
    404 that is about the route rather than the model. For the latter, when the base URL does not end
    in ``/v1``, the same request to ``{base}/v1/responses`` tells "you forgot /v1" from "nothing here".
    Every other answer (a timeout, a 401, a 500) is left for the scenarios to report in detail.
    """
    base = base_url.rstrip("/")
    path = "/chat/completions" if api == "chat" else "/responses"
    url = base + path
    body: dict[str, Any] = {"model": model, "messages": 42} if api == "chat" else {"model": model, "input": 42}
    try:
        reply = client.post(url, json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return f"cannot connect to {url}: {exc or type(exc).__name__}"
    except httpx.HTTPError:
        return None
    if reply.status_code != 404 or _is_about_the_model(reply, model):
        return None
    if not base.endswith("/v1"):
        alternative = base + "/v1" + path
        try:
            answer: httpx.Response | None = client.post(alternative, json=body)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code != 404:
            return (
                f"POST {url} answered 404, but {alternative} answers {answer.status_code}: "
                f"the base URL needs its /v1 (--base-url {base}/v1)"
            )
    return (
        f"POST {url} answered 404 ({_excerpt(reply.text, 80)}): --base-url must be the URL that "
        f"{path} is under, e.g. http://HOST:PORT/v1"
    )


# --------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `check` flags (server/cli.py adds them to its subcommand)."""
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
    parser.add_argument("--api", choices=("responses", "chat"), default="responses",
                        help="responses (default): POST {base}/responses; chat: the same scenarios against "
                             "POST {base}/chat/completions, judged by the chunk grammar")  # fmt: skip
    parser.add_argument("--profile", choices=PROFILES, default="openai",
                        help="openai (default) or openresponses (adds Open Responses' stricter rules)")  # fmt: skip
    parser.add_argument("--unknown-model", default=DEFAULT_UNKNOWN_MODEL,
                        help="the model name the unknown-model scenario sends")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON report on stdout")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")


def format_scenario_list(scenarios: Sequence[Scenario] = SCENARIOS) -> str:
    """`check --list`: one row per scenario under a header, every column as wide as its widest cell."""
    rows = [("scenario", "answer", "description")]
    rows += [(s.name, "stream" if s.stream else "body", s.description) for s in scenarios]
    name_w = max(len(r[0]) for r in rows)
    kind_w = max(len(r[1]) for r in rows)
    return "\n".join(f"{n:<{name_w}}  {k:<{kind_w}}  {d}" for n, k, d in rows)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the selected scenarios; 0 when all pass, 1 on any violation or failure, 2 when the check
    cannot run (bad usage, nothing listening, no Responses endpoint at the URL)."""
    out = out or sys.stdout
    err = err or sys.stderr
    api = getattr(args, "api", "responses")
    if getattr(args, "list", False):
        out.write(format_scenario_list(CHAT_SCENARIOS if api == "chat" else SCENARIOS) + "\n")
        return 0
    if not args.base_url or not args.model:
        err.write("check: --base-url and --model are required\n")
        return 2
    problem = base_url_problem(args.base_url)
    try:
        select = select_chat_scenarios if api == "chat" else select_scenarios
        scenarios = select(args.scenarios, getattr(args, "skip", None))
    except ValueError as exc:
        problem = problem or str(exc)
    if problem:
        err.write(f"check: {problem}\n")
        return 2
    # never $OPENAI_API_KEY: check is pointed at third-party endpoints, which must not receive that key
    api_key = args.api_key or os.environ.get("RESPONSES_BRIDGE_CHECK_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = args.base_url.rstrip("/") + ("/chat/completions" if api == "chat" else "/responses")
    profile = getattr(args, "profile", "openai")
    unknown_model = getattr(args, "unknown_model", DEFAULT_UNKNOWN_MODEL)
    results: list[ScenarioResult] = []
    with httpx.Client(timeout=args.timeout, headers=headers) as client:
        problem = probe(client, args.base_url, args.model, api)
        if problem:
            err.write(f"check: {problem}\n")
            return 2
        progress = _Progress(err, len(scenarios))
        for scenario in scenarios:
            progress.start(scenario.name)
            if api == "chat":
                result = run_chat_scenario(client, url, scenario, args.model, unknown_model=unknown_model)
            else:
                result = run_scenario(
                    client, url, scenario, args.model, profile=profile, unknown_model=unknown_model
                )
            results.append(result)
            progress.done(result)
        progress.close()
    report = make_report(args.base_url, args.model, "chat" if api == "chat" else profile, results)
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
    """`python -m conformance.check …` (the same flags as `responses-bridge check`)."""
    parser = argparse.ArgumentParser(
        prog="responses-bridge check",
        description="Validate any /v1/responses endpoint against the Responses API contract.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
