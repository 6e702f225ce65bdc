"""The rule table: every rule the conformance kit reports, and the one shape a broken rule takes.

Rules are data (name → why it exists, with the section of ``docs/wire.md`` it comes from), so a report
can name the rule and a reader can look up the reason; the checks live in :mod:`conformance.sse`,
:mod:`conformance.events`, :mod:`conformance.response` and :mod:`conformance.check`. This module
imports nothing of the kit: everything else builds on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHECK_RULES", "PROFILES", "RULES", "Violation", "check_profile", "format_violations"]

#: ``"openai"``: what OpenAI's API and SDK accept, plus the Open Responses Response-object constraints a
#: real OpenAI response also satisfies. ``"openresponses"``: adds Open Responses' stricter rules (its
#: event names, nested ``error`` events, function tools only, no custom tool items).
PROFILES = ("openai", "openresponses")

#: Every rule the validator can report, with why it exists; section numbers are those of docs/wire.md.
RULES: dict[str, str] = {
    # SSE framing (docs/wire.md §1.1)
    "sse-line-endings": "frames use LF line endings; a CRLF frame never dispatches in the Open Responses parser (§1.1)",
    "sse-event-name": "every frame has an `event:` line equal to its data's `type` (§1.1, OR MUST)",
    "sse-data-lines": "one `data:` line per frame; OR's parser keeps only the last one (§1.1)",
    "sse-id": "no `id:` lines (§1.1, OR: servers SHOULD NOT use id)",
    "sse-json": "every `data:` payload (except [DONE]) is one JSON object (§1.1)",
    "sse-framing": "every frame ends with a blank line (§1.1)",
    "sse-done": "the stream ends with `data: [DONE]` (OR requires it; OpenAI does not send it) and nothing follows it (§1.1)",
    "sse-content-type": "the streaming response has Content-Type text/event-stream (§1.1)",
    # event stream (docs/wire.md §1.2, §1.5, §1.6, §1.7)
    "event-type": "every event is an object with a known `type` (§1.1, §1.2)",
    "event-fields": "every event has its required fields with the right types (§1.2)",
    "first-event": "the first event is response.created, and only the first (§1.5, §1.7)",
    "in-progress": "response.in_progress follows response.created, once, before any output (§1.5 canonical prefix)",
    "lifecycle-status": "created/in_progress carry status in_progress (or queued) and output [] at creation (§1.3, §1.5)",
    "sequence-number": "sequence_number is an integer starting at 0 and going up by 1 on every event (§1.6)",
    "response-id": "the response id is the same on every lifecycle event (§1.6, SDK raises)",
    "output-index": "output_index values are 0,1,2,… in the order of output_item.added, each used once (§1.6)",
    "item-not-added": "no event for an output_index before its output_item.added (§1.7, SDK raises)",
    "item-type-mismatch": "text events target message items, argument events function calls, etc. (§1.7, SDK asserts)",
    "content-index": "content_part.added comes before that content_index's events; indexes are 0,1,… per item (§1.6)",
    "item-id": "item_id equals the id of the item from output_item.added (§1.6)",
    "delta-sum": "the deltas concatenated equal the .done text/arguments/input and the done item/part (§1.5)",
    "unclosed-part": "every streamed part and argument string gets its .done events before output_item.done (§1.5)",
    "item-identity": "output_item.done keeps the added item's type, id and (for calls) call_id (§1.6, SDK raises)",
    "item-status": "added items are in_progress; done items completed or incomplete (§1.4, §1.5)",
    "after-done": "no event for an item or part after its own done event (§1.5)",
    "terminal": "exactly one terminal event (completed/incomplete/failed), the last event (§1.5)",
    "terminal-status": "the terminal response's status matches the event type (§1.5)",
    "terminal-output": "the terminal output equals the done items in output_index order (failed: open items marked incomplete) (§1.5, §1.7)",
    "unfinished-item": "completed/incomplete responses have every added item done (§1.7, SDK raises)",
    "incomplete-item": "an incomplete item is the last item and only in an incomplete (or failed) response (§1.5d, OR)",
    "error-event": "the error event has OpenAI's flat and/or Open Responses' nested shape and is followed by response.failed (§1.8)",
    "echo": "the Response echoes the request's model, tools, tool_choice, sampling and limits (§1.3, §4)",
    # Response object (docs/wire.md §1.3, §1.4)
    "response-field": "every field Open Responses' ResponseResource requires is present (§1.3)",
    "response-type": "Response fields have the types OR enforces: integer timestamps, numbers not null, … (§1.3)",
    "response-status": "status is a known value; incomplete has incomplete_details, failed has error (§1.3)",
    "usage": "usage is null or the full Responses usage object, not chat-style prompt_tokens (§1.3)",
    "item-field": "output items have their required keys: message id/status/role/content, call ids, summary (§1.4)",
    "item-type": "output items and content parts have known types (output_text, not text) (§1.4)",
    # Open Responses profile only
    "or-event-name": "Open Responses' event set: response.reasoning.* not reasoning_text, no custom/hosted events (§1.2)",
    "or-tools": "Open Responses echoes only function tools, each with description/parameters/strict keys (§1.3)",
    "or-item-type": "Open Responses has no custom_tool_call (or hosted) output items (§1.4)",
}


#: The rules `check` adds on top of the validator's (HTTP-level and per-scenario expectations).
CHECK_RULES: dict[str, str] = {
    "http-status": "the endpoint answers 200 to a good request and 4xx to a bad one",
    "content-type": "JSON bodies are application/json, streams text/event-stream",
    "json-body": "a non-streaming body is one JSON object",
    "error-shape": "errors use OpenAI's envelope {error: {message, type, param, code}}",
    "scenario": "the answer has what the scenario asked for (a text, a tool call, JSON, …)",
    "transport": "the request completed (no connection error or timeout)",
    "sdk-accumulator": "the openai SDK's stream accumulator (ResponseStreamState) accepts the stream, when openai is installed",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule. ``index`` is the event's position in the list, None for whole-stream rules."""

    index: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = "" if self.index is None else f"[event {self.index}] "
        return f"{where}{self.rule}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rule": self.rule, "message": self.message}


def format_violations(violations: Iterable[Violation]) -> str:
    """One violation per line, for assertion messages and CLI output."""
    return "\n".join(str(v) for v in violations)


def check_profile(profile: str) -> None:
    """Raise ValueError for a profile name the kit does not know (a typo must not mean "no rules")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
