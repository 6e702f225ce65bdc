"""The event catalogue: every Responses event name the kit knows, and the fields each must carry.

The event-name sets (:data:`EVENT_TYPES`, :data:`TERMINAL_EVENT_TYPES`, :data:`OUTPUT_DELTA_TYPES`)
come from the translator's catalogue (``translator/events.py``), the one list of event names in the
project, so the bridge's producer and this judge cannot drift apart; importing this module fails if
the field rules below ever cover a different set. ``translator.events`` is pure data with no I/O, so
the kit still judges any Responses producer. The per-event field specs and the delta/part tables are
rules as data (see docs/wire.md §1.2 for the catalogue, §1.5-§1.7 for how the events of one item
relate).
"""

from __future__ import annotations

from translator import events as _catalogue

__all__ = [
    "CALL_TEXT_KEY",
    "EVENT_FIELDS",
    "EVENT_TYPES",
    "LIFECYCLE_EVENT_TYPES",
    "OPENAI_ONLY_PREFIXES",
    "OR_REJECTED_PREFIXES",
    "OUTPUT_DELTA_TYPES",
    "PART_EVENTS",
    "PART_TEXT_KEY",
    "PART_TYPES",
    "TERMINAL_EVENT_TYPES",
    "TERMINAL_STATUS",
    "TEXT_EVENTS",
]

#: Lifecycle events before the end, each carrying the whole Response.
LIFECYCLE_EVENT_TYPES: tuple[str, ...] = tuple(sorted(_catalogue.LIFECYCLE_EVENT_TYPES))
#: The terminal events and the Response status each must carry (§1.5).
TERMINAL_STATUS: dict[str, str] = dict(_catalogue.TERMINAL_STATUS)

_ITEM_TEXT = {"item_id": "str", "output_index": "int", "content_index": "int"}
_SUMMARY = {"item_id": "str", "output_index": "int", "summary_index": "int"}
_CALL = {"item_id": "str", "output_index": "int"}

#: Required fields of every event the kit checks in detail, other than type and sequence_number (§1.2).
EVENT_FIELDS: dict[str, dict[str, str]] = {
    **{t: {"response": "dict"} for t in (*LIFECYCLE_EVENT_TYPES, *TERMINAL_STATUS)},
    "response.output_item.added": {"output_index": "int", "item": "dict"},
    "response.output_item.done": {"output_index": "int", "item": "dict"},
    "response.content_part.added": {**_ITEM_TEXT, "part": "dict"},
    "response.content_part.done": {**_ITEM_TEXT, "part": "dict"},
    "response.output_text.delta": {**_ITEM_TEXT, "delta": "str", "logprobs": "list"},
    "response.output_text.done": {**_ITEM_TEXT, "text": "str", "logprobs": "list"},
    "response.output_text.annotation.added": {**_ITEM_TEXT, "annotation_index": "int"},
    "response.refusal.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.refusal.done": {**_ITEM_TEXT, "refusal": "str"},
    "response.function_call_arguments.delta": {**_CALL, "delta": "str"},
    "response.function_call_arguments.done": {**_CALL, "arguments": "str"},
    "response.custom_tool_call_input.delta": {**_CALL, "delta": "str"},
    "response.custom_tool_call_input.done": {**_CALL, "input": "str"},
    "response.reasoning_summary_part.added": {**_SUMMARY, "part": "dict"},
    "response.reasoning_summary_part.done": {**_SUMMARY, "part": "dict"},
    "response.reasoning_summary_text.delta": {**_SUMMARY, "delta": "str"},
    "response.reasoning_summary_text.done": {**_SUMMARY, "text": "str"},
    "response.reasoning_text.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.reasoning_text.done": {**_ITEM_TEXT, "text": "str"},
    # Open Responses' names for raw reasoning; the SDK passes them through (§1.2)
    "response.reasoning.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.reasoning.done": {**_ITEM_TEXT, "text": "str"},
    "error": {},  # shape checked separately: flat, nested or both (§1.8)
}

#: Events of the SDK union a chat translator never produces (hosted tools, audio, …): known to OpenAI,
# not to Open Responses, and not about items this validator tracks in detail.
OPENAI_ONLY_PREFIXES = (
    "response.audio.",
    "response.code_interpreter_call",
    "response.file_search_call.",
    "response.web_search_call.",
    "response.image_generation_call.",
    "response.mcp_call",
    "response.mcp_list_tools.",
    "response.shell_call",
    "response.compaction.",
)

#: The Open Responses event set (§1.2): OpenAI's minus custom-tool, audio, hosted and reasoning_text events.
OR_REJECTED_PREFIXES = ("response.reasoning_text.", "response.custom_tool_call_input.", *OPENAI_ONLY_PREFIXES)

#: delta/done events that build up one string of an item: type → (item type, container, part type, field)
# container "content" = item.content[content_index], "summary" = item.summary[summary_index],
# None = the call's own arguments/input.
TEXT_EVENTS: dict[str, tuple[str, str | None, str | None, str]] = {
    "response.output_text.delta": ("message", "content", "output_text", "delta"),
    "response.output_text.done": ("message", "content", "output_text", "text"),
    "response.refusal.delta": ("message", "content", "refusal", "delta"),
    "response.refusal.done": ("message", "content", "refusal", "refusal"),
    "response.reasoning_text.delta": ("reasoning", "content", "reasoning_text", "delta"),
    "response.reasoning_text.done": ("reasoning", "content", "reasoning_text", "text"),
    "response.reasoning.delta": ("reasoning", "content", "reasoning_text", "delta"),
    "response.reasoning.done": ("reasoning", "content", "reasoning_text", "text"),
    "response.reasoning_summary_text.delta": ("reasoning", "summary", "summary_text", "delta"),
    "response.reasoning_summary_text.done": ("reasoning", "summary", "summary_text", "text"),
    "response.function_call_arguments.delta": ("function_call", None, None, "delta"),
    "response.function_call_arguments.done": ("function_call", None, None, "arguments"),
    "response.custom_tool_call_input.delta": ("custom_tool_call", None, None, "delta"),
    "response.custom_tool_call_input.done": ("custom_tool_call", None, None, "input"),
}

PART_EVENTS: dict[str, tuple[str, str, bool]] = {
    # type → (container, index field, is_done)
    "response.content_part.added": ("content", "content_index", False),
    "response.content_part.done": ("content", "content_index", True),
    "response.reasoning_summary_part.added": ("summary", "summary_index", False),
    "response.reasoning_summary_part.done": ("summary", "summary_index", True),
}

#: part types allowed in each (item type, container), and the key holding the part's text
PART_TYPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("message", "content"): ("output_text", "refusal"),
    ("reasoning", "content"): ("reasoning_text",),
    ("reasoning", "summary"): ("summary_text",),
}
PART_TEXT_KEY: dict[str, str] = {
    "output_text": "text",
    "refusal": "refusal",
    "reasoning_text": "text",
    "summary_text": "text",
}
CALL_TEXT_KEY: dict[str, str] = {"function_call": "arguments", "custom_tool_call": "input"}


#: Every event type the kit checks in detail (events under OPENAI_ONLY_PREFIXES are known but not followed):
#: the translator's catalogue, so producer and judge cannot drift apart.
EVENT_TYPES: frozenset[str] = _catalogue.EVENT_TYPES
#: The events that end a stream; exactly one of them, last (§1.5).
TERMINAL_EVENT_TYPES: frozenset[str] = _catalogue.TERMINAL_EVENT_TYPES
#: The events that append text to an output item (message text, refusal, reasoning, call arguments).
OUTPUT_DELTA_TYPES: frozenset[str] = _catalogue.OUTPUT_DELTA_TYPES

if set(EVENT_FIELDS) != EVENT_TYPES or {t for t, spec in TEXT_EVENTS.items() if spec[3] == "delta"} != OUTPUT_DELTA_TYPES:
    raise ImportError("conformance.catalogue: the field rules and translator.events list different events")
