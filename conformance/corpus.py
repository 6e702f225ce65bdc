"""The fixture corpus replayed through any running bridge, judged by its hand-written expectations.

The golden tests (tests/test_golden_fixtures.py) drive this project's translator with each scenario of
``fixtures/scenarios/``; this runner drives a running bridge instead (this one or another) whose
upstream is the fixture backend, so the same expectations judge any Responses endpoint:

    python -m fixtures.backend --port 8099 &
    <start your bridge with upstream http://127.0.0.1:8099/v1>
    python -m conformance.corpus --base-url http://127.0.0.1:8080/v1 [--scenario NAME ...] [--json]

Each stream is also checked against the SSE framing and event-grammar rules. May import: the rest of
the kit, and fixtures.corpus (which only loads scenario data).
"""

from __future__ import annotations

import argparse
import sys

import httpx
import orjson

from conformance.events import validate_events
from conformance.expected import check_against_expected
from conformance.sse import parse_sse
from fixtures.corpus import Scenario, load, scenario_names

__all__ = ["main", "run_against"]


def run_against(base_url: str, scenario: Scenario, *, api_key: str | None, timeout: float) -> list[str]:
    """Send one scenario's request to a running bridge and list what differs from the expectations."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/responses"
    try:
        reply = httpx.post(url, json=scenario.request, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return [f"transport: {type(exc).__name__}: {exc}"]
    if reply.status_code != 200:
        return [f"http {reply.status_code}: {reply.text[:300]}"]
    events, framing = parse_sse(reply.content)
    problems = [f"framing: {v}" for v in framing]
    problems += check_against_expected(events, scenario.expected)
    problems += [f"grammar: {v}" for v in validate_events(events, request=scenario.request)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="the bridge's base URL ending in /v1")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--scenario", action="append", dest="scenarios", metavar="NAME")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    names = args.scenarios or scenario_names()
    report: dict[str, list[str]] = {}
    for name in names:
        report[name] = run_against(args.base_url, load(name), api_key=args.api_key, timeout=args.timeout)
        if not args.json:
            mark = "ok  " if not report[name] else "FAIL"
            print(f"{mark} {name}")
            for problem in report[name]:
                print("       " + problem.replace("\n", "\n       "))
    failed = sum(1 for problems in report.values() if problems)
    if args.json:
        sys.stdout.write(
            orjson.dumps({"failed": failed, "scenarios": report}, option=orjson.OPT_INDENT_2).decode()
        )
        sys.stdout.write("\n")
    else:
        print(f"{len(names) - failed}/{len(names)} scenarios as expected")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
