"""The conformance kit: rules any Responses API producer must follow, and tools that apply them.

It judges this project's translator and any other server alike, so it imports nothing of the server
and of the translator only its pure event catalogue (``translator/events.py``, the one list of event
names); only the corpus runner reads the scenario data in ``fixtures/``.
Modules, bottom to top (each may import only those above it):

* :mod:`conformance.rules` - the rule table (:data:`RULES`, :data:`CHECK_RULES`), :class:`Violation`;
* :mod:`conformance.kinds` - JSON value predicates and the compact rendering in messages;
* :mod:`conformance.catalogue` - event names (:data:`EVENT_TYPES`, :data:`TERMINAL_EVENT_TYPES`,
  :data:`OUTPUT_DELTA_TYPES`) and the fields each event carries;
* :mod:`conformance.sse` - SSE framing rules and the lenient decoder :func:`parse_sse`;
* :mod:`conformance.response` - Response-object rules, :func:`validate_response`;
* :mod:`conformance.events` - event-grammar rules, :func:`validate_events`, :func:`assert_valid`;
* :mod:`conformance.sdk` - the openai SDK's stream accumulator as a rule (optional dependency);
* :mod:`conformance.expected` - comparing a stream with a corpus scenario's ``expected.json``;
* :mod:`conformance.scenarios`, :mod:`conformance.check` - `responses-bridge check`;
* :mod:`conformance.corpus` - the fixture corpus replayed through any running bridge.

The wire facts behind the rules are in docs/wire.md; how to use the kit is in docs/conformance.md.
"""

from __future__ import annotations

from conformance.catalogue import EVENT_FIELDS, EVENT_TYPES, OUTPUT_DELTA_TYPES, TERMINAL_EVENT_TYPES
from conformance.events import assert_valid, validate_events
from conformance.response import RESPONSE_REQUIRED, validate_response
from conformance.rules import CHECK_RULES, PROFILES, RULES, Violation, format_violations
from conformance.sdk import sdk_accumulate, sdk_accumulator_problem
from conformance.sse import parse_sse, validate_sse

__all__ = [
    "CHECK_RULES",
    "EVENT_FIELDS",
    "EVENT_TYPES",
    "OUTPUT_DELTA_TYPES",
    "PROFILES",
    "RESPONSE_REQUIRED",
    "RULES",
    "TERMINAL_EVENT_TYPES",
    "Violation",
    "assert_valid",
    "format_violations",
    "parse_sse",
    "sdk_accumulate",
    "sdk_accumulator_problem",
    "validate_events",
    "validate_response",
    "validate_sse",
]
