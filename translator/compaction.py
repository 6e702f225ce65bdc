"""Compaction: replacing a long conversation by a model-written summary the client carries back.

A chat backend has no compaction of its own, so the bridge makes one (docs/compaction.md):

1. `summary_request` turns the conversation into a Responses create body that asks the backend
   model for a handoff summary. The server sends it through the ordinary translation
   (`responses_to_chat_request` / `chat_completion_to_response`), so profiles apply to it too, and
   `summary_from_response` takes the text out of the answer.
2. `compaction_output` (the standalone ``/v1/responses/compact`` window: the user's messages, then
   one ``compaction`` item) or `trigger_response` / `trigger_events` (Codex's in-band trigger: one
   ``compaction`` item and nothing else) wrap the summary.
3. On a later request, `expand_compaction_items` replaces the ``compaction`` item by the summary in
   a user message, keeps the user/system/developer messages before it and everything after it.

The summary travels inside ``encrypted_content``, packed with the reasoning helpers
(`translator.reasoning`): Fernet (authenticated encryption) under ``encryption_key``, otherwise
base64 JSON. Either way the payload carries an HMAC-SHA256 tag under a fixed, public key: without
a configured key that is an integrity check, not authentication; it lets every bridge process
(after a restart, on any replica) tell its own tokens from corrupted or foreign ones without shared
state. Why that is enough without a key is in docs/compaction.md. Everything here is pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import Any

import orjson

from .errors import InvalidRequest, UpstreamError
from .reasoning import pack_reasoning, unpack_reasoning
from .responses import map_usage, response_skeleton

__all__ = [
    "COMPACTION_TYPE",
    "SUMMARY_INSTRUCTIONS",
    "TRIGGER_TYPE",
    "check_compaction_trigger",
    "compaction_item",
    "compaction_output",
    "compaction_resource",
    "expand_compaction_items",
    "has_compaction_items",
    "open_compaction",
    "render_transcript",
    "retained_user_messages",
    "seal_summary",
    "split_compaction_trigger",
    "summary_from_response",
    "summary_message",
    "summary_request",
    "trigger_events",
    "trigger_response",
]

COMPACTION_TYPE = "compaction"
TRIGGER_TYPE = "compaction_trigger"

#: The spec's bound on a compaction item's ``encrypted_content`` (checked before any decoding).
MAX_ENCRYPTED_CONTENT = 10_485_760
#: What the summariser is asked to stay under, and the hard cap on its answer.
SUMMARY_WORD_BUDGET = 900
SUMMARY_MAX_OUTPUT_TOKENS = 4096
#: The transcript handed to the summariser: one tool output or message is clipped to
#: `ENTRY_CLIP_CHARS` (head and tail kept); over `TRANSCRIPT_BUDGET_CHARS` (about 50k tokens) the
#: oldest entries go, except the first user message and earlier summaries.
ENTRY_CLIP_CHARS = 6_000
TRANSCRIPT_BUDGET_CHARS = 200_000
#: How much of the user's own words the standalone window keeps (newest first), in characters.
RETAINED_USER_BUDGET_CHARS = 40_000

_KIND = "compaction"
_VERSION = 1
#: A fixed key: the tag is an integrity check that needs no shared secret (module docstring).
_TAG_KEY = b"responses-bridge compaction tag v1"
_SEALED = "rb1f."
_PLAIN = "rb1."

SUMMARY_INSTRUCTIONS = f"""\
You are compacting the history of a long-running session between a user and an AI agent that \
uses tools, so the agent can continue in a fresh, smaller context. The transcript follows in the \
user message. Write a handoff summary: the agent will rely on it as its only record of the \
earlier turns.

Keep, under these headings:
## Goal
The user's goals and requirements, constraints and stated preferences (quote exact wording \
where it matters).
## Decisions
What was decided and why; approaches tried and rejected, and why they failed.
## Files and state
Every file, path, command, identifier, URL, branch or setting touched or created, and what was \
changed in it.
## Tool results that matter
Outputs, errors, test results and numbers the next steps depend on: quote short exact values, \
summarise long output.
## Open tasks
What remains to be done, in order, with the very next step first; any question awaiting the user.

Rules: state facts from the transcript only, never invent. If the transcript contains an earlier \
summary, fold it in: yours replaces it. Do not continue the task, do not address the user, do \
not call tools. Use short bullet points. Stay under {SUMMARY_WORD_BUDGET} words."""

_SUMMARY_HEADER = (
    "[Context compacted by responses-bridge] The earlier part of this conversation was replaced "
    "by the summary below, written by the model from the full history. Treat it as your record "
    "of those turns and continue the work from it; the user's messages kept with it are verbatim."
)


# ------------------------------------------------------------------------------- trigger


def _type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else None


def check_compaction_trigger(items: Any) -> None:
    """Refuse a ``compaction_trigger`` anywhere but as the final input item (400 naming it)."""
    if not isinstance(items, list):
        return
    last = len(items) - 1
    for index, item in enumerate(items):
        if _type(item) == TRIGGER_TYPE and index != last:
            raise InvalidRequest(
                f"The 'compaction_trigger' item must be the final input item (found at input[{index}] "
                f"of {len(items)} items).",
                param=f"input[{index}]",
                code="invalid_value",
            )


def split_compaction_trigger(items: Any) -> tuple[Any, bool]:
    """``(input without the trigger, triggered)``; checks the trigger is last (`check_compaction_trigger`).

    A string input or anything not a list comes back unchanged with ``False``.
    """
    if not isinstance(items, list):
        return items, False
    check_compaction_trigger(items)
    if items and _type(items[-1]) == TRIGGER_TYPE:
        return items[:-1], True
    return items, False


# ------------------------------------------------------------------------- sealing


def _tag(fields: dict[str, Any]) -> str:
    raw = hmac.new(_TAG_KEY, orjson.dumps(fields, option=orjson.OPT_SORT_KEYS), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw[:16]).rstrip(b"=").decode("ascii")


def seal_summary(
    summary: str, *, key: str | None = None, model: str = "", created_at: int | None = None
) -> str:
    """The ``encrypted_content`` of a compaction item carrying `summary`."""
    fields = {
        "kind": _KIND,
        "v": _VERSION,
        "summary": summary,
        "model": model,
        "created_at": int(time.time()) if created_at is None else created_at,
    }
    return pack_reasoning({**fields, "tag": _tag(fields)}, key)


def _canonical_b64(body: str) -> bool:
    """True when `body` is base64url exactly as an encoder writes it (no stray padding bits), so
    that no second spelling of a token decodes to the same bytes."""
    try:
        padded = body + "=" * (-len(body) % 4)
        return base64.urlsafe_b64encode(base64.urlsafe_b64decode(padded)).decode("ascii") == padded
    except (ValueError, binascii.Error):
        return False


def open_compaction(
    token: Any, *, key: str | None = None, param: str = "encrypted_content"
) -> dict[str, Any]:
    """The payload (``summary``, ``model``, ``created_at``) of a token `seal_summary` made.

    Raises `InvalidRequest` naming `param` for anything else: corrupted, forged, sealed under
    another key, or produced by another service.
    """
    refused = InvalidRequest(
        "This compaction item was not produced by this bridge, or it was altered: its encrypted_content "
        "is corrupted, forged, or sealed with a different encryption key. Send compaction items back "
        "exactly as the bridge returned them.",
        param=param,
        code="invalid_encrypted_content",
    )
    if not isinstance(token, str):
        raise InvalidRequest("A compaction item needs 'encrypted_content' as a string.", param=param,
                             code="invalid_type")  # fmt: skip
    if len(token) > MAX_ENCRYPTED_CONTENT:
        raise InvalidRequest(f"encrypted_content is longer than {MAX_ENCRYPTED_CONTENT} characters.",
                             param=param, code="string_above_max_length")  # fmt: skip
    if token.startswith(_SEALED):
        body = token[len(_SEALED) :]
    elif token.startswith(_PLAIN):
        body = token[len(_PLAIN) :]
    else:
        raise refused
    if (token.startswith(_PLAIN) and "=" in body) or not _canonical_b64(body):
        raise refused
    data = unpack_reasoning(token, key)
    if data is None or data.get("kind") != _KIND or data.get("v") != _VERSION:
        raise refused
    tag = data.get("tag")
    fields = {k: v for k, v in data.items() if k != "tag"}
    if set(fields) != {"kind", "v", "summary", "model", "created_at"} or not isinstance(tag, str):
        raise refused
    if not hmac.compare_digest(tag, _tag(fields)) or not isinstance(fields["summary"], str):
        raise refused
    return fields


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def compaction_item(
    summary: str,
    *,
    key: str | None = None,
    model: str = "",
    created_at: int | None = None,
    item_id: str | None = None,
) -> dict[str, Any]:
    """One output item ``{"type": "compaction", "id": "cmp_…", "encrypted_content": "…"}``."""
    return {
        "type": COMPACTION_TYPE,
        "id": item_id or _new_id("cmp"),
        "encrypted_content": seal_summary(summary, key=key, model=model, created_at=created_at),
    }


# ---------------------------------------------------------------------- transcript


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[… {len(text) - 2 * half} characters omitted …]\n{text[-half:]}"


def _parts_text(content: Any) -> str:
    """A message's content as text; images and files as short placeholders."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    out: list[str] = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part.get("refusal"), str):
                out.append(f"[refusal] {part['refusal']}")
            elif kind == "input_image":
                out.append("[image]")
            elif kind == "input_file":
                name = part.get("filename")
                out.append(f"[file {name}]" if isinstance(name, str) else "[file]")
    return "\n".join(out)


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _parts_text(output)
    return orjson.dumps(output).decode() if output is not None else ""


def _param(index: int, first_client_index: int) -> str:
    """Where an item sits for the client: its index in the request's own ``input``, or the stored
    history it came from (via ``previous_response_id``)."""
    if index < first_client_index:
        return "previous_response_id"
    return f"input[{index - first_client_index}].encrypted_content"


def _entry(item: Any, index: int, key: str | None, first_client_index: int) -> tuple[str, bool] | None:
    """One transcript entry and whether it is protected from the budget (an earlier summary)."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        role = item.get("role") if isinstance(item.get("role"), str) else "user"
        return f"### {role}\n{_clip(_parts_text(item.get('content')), ENTRY_CLIP_CHARS)}", False
    if kind == COMPACTION_TYPE:
        summary = open_compaction(
            item.get("encrypted_content"), key=key, param=_param(index, first_client_index)
        )
        return f"### earlier summary (replaces the turns before it)\n{summary['summary']}", True
    if kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments") if kind == "function_call" else item.get("input")
        text = args if isinstance(args, str) else orjson.dumps(args).decode()
        return (
            f"### tool call {item.get('name')} ({item.get('call_id')})\n{_clip(text, ENTRY_CLIP_CHARS)}",
            False,
        )
    if kind in ("function_call_output", "custom_tool_call_output"):
        text = _output_text(item.get("output"))
        return f"### tool result ({item.get('call_id')})\n{_clip(text, ENTRY_CLIP_CHARS)}", False
    if kind in ("reasoning", TRIGGER_TYPE, "item_reference"):
        return None  # private thinking / a request control / already resolved by the server
    body = {k: v for k, v in item.items() if k not in ("id", "encrypted_content")}
    return f"### {kind}\n{_clip(orjson.dumps(body).decode(), ENTRY_CLIP_CHARS)}", False


def render_transcript(
    items: Any, *, key: str | None = None, budget: int = TRANSCRIPT_BUDGET_CHARS, first_client_index: int = 0
) -> str:
    """The conversation as plain text for the summariser, oldest first, within `budget` characters.

    Plain text rather than chat messages: every backend template accepts it, the summariser never
    mistakes it for a turn to continue, and tool outputs can be clipped. Compaction items are
    opened (and checked: `InvalidRequest` for a bad one).
    """
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    entries: list[tuple[str, bool]] = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        entry = _entry(item, index, key, first_client_index)
        if entry is not None:
            entries.append(entry)
    first_user = next((i for i, (text, _) in enumerate(entries) if text.startswith("### user\n")), None)
    total = sum(len(text) + 2 for text, _ in entries)
    keep = [True] * len(entries)
    for i, (text, protected) in enumerate(entries):
        if total <= budget:
            break
        if protected or i == first_user or i == len(entries) - 1:
            continue
        keep[i] = False
        total -= len(text) + 2
    out: list[str] = []
    for i, (text, _) in enumerate(entries):
        if not keep[i]:
            if i == 0 or keep[i - 1]:
                out.append("[… earlier entries omitted to fit the summariser's budget …]")
            continue
        out.append(text)
    return "\n\n".join(out)


def summary_request(
    items: Any,
    *,
    model: str,
    key: str | None = None,
    prompt_cache_key: str | None = None,
    max_output_tokens: int = SUMMARY_MAX_OUTPUT_TOKENS,
    first_client_index: int = 0,
) -> dict[str, Any]:
    """The Responses create body asking `model` for the summary of `items`.

    The client's own instructions and tools are left out: the summariser needs neither (they come
    back with the next turn), and without tools it cannot answer with a tool call.
    """
    transcript = render_transcript(items, key=key, first_client_index=first_client_index)
    text = (
        "Transcript of the session to compact, oldest first:\n\n<transcript>\n"
        f"{transcript}\n</transcript>\n\nWrite the handoff summary now."
    )
    request: dict[str, Any] = {
        "model": model,
        "instructions": SUMMARY_INSTRUCTIONS,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "max_output_tokens": max_output_tokens,
        "store": False,
    }
    if prompt_cache_key is not None:
        request["prompt_cache_key"] = prompt_cache_key
    return request


def summary_from_response(response: Any) -> str:
    """The summary text of the Response the backend's answer was translated into.

    `UpstreamError` when there is none (an empty answer, or only a tool call or reasoning).
    """
    texts: list[str] = []
    for item in response.get("output", []) if isinstance(response, dict) else []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if (
                    isinstance(part, dict)
                    and part.get("type") == "output_text"
                    and isinstance(part.get("text"), str)
                ):
                    texts.append(part["text"])
    summary = "\n".join(texts).strip()
    if not summary:
        raise UpstreamError(
            "The backend model returned no text for the compaction summary.", code="empty_summary"
        )
    return summary


# -------------------------------------------------------------------------- output


def _user_message(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if isinstance(content, str):
        content = [{"type": "input_text", "text": content}]
    elif isinstance(content, list):
        content = [{"type": "input_text", "text": p} if isinstance(p, str) else p for p in content]
    else:
        content = []
    item_id = item.get("id")
    return {
        "type": "message",
        "id": item_id if isinstance(item_id, str) and item_id else _new_id("msg"),
        "status": "completed",
        "role": "user",
        "content": content,
    }


def _is_user_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user"


def retained_user_messages(items: Any, budget: int = RETAINED_USER_BUDGET_CHARS) -> list[dict[str, Any]]:
    """The user's messages, newest first until `budget` characters of text, in their original order."""
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    users = [i for i in (items if isinstance(items, list) else []) if _is_user_message(i)]
    kept: list[dict[str, Any]] = []
    used = 0
    for item in reversed(users):
        size = len(_parts_text(item.get("content")))
        if kept and used + size > budget:
            break
        kept.append(_user_message(item))
        used += size
    kept.reverse()
    return kept


def compaction_output(
    items: Any, summary: str, *, key: str | None = None, model: str = "", created_at: int | None = None
) -> list[dict[str, Any]]:
    """The standalone compacted window: the user's messages, then one compaction item."""
    return [
        *retained_user_messages(items),
        compaction_item(summary, key=key, model=model, created_at=created_at),
    ]


def compaction_resource(
    output: list[dict[str, Any]], usage: Any, *, created_at: int | None = None, resource_id: str | None = None
) -> dict[str, Any]:
    """The ``response.compaction`` answer of ``POST /v1/responses/compact`` (`usage`: chat usage)."""
    return {
        "id": resource_id or _new_id("cmpr"),
        "object": "response.compaction",
        "created_at": int(time.time()) if created_at is None else created_at,
        "output": output,
        "usage": map_usage(usage) or map_usage({}),
    }


# ---------------------------------------------------------------- in-band trigger


def trigger_response(
    request: dict[str, Any],
    summary: str,
    usage: Any,
    *,
    key: str | None = None,
    model: str = "",
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The completed Response for a request whose final input item was ``compaction_trigger``: its
    output is exactly one compaction item (Codex refuses anything else). `usage`: chat usage, or a
    Responses usage already mapped."""
    now = int(time.time()) if created_at is None else created_at
    response = response_skeleton(request, response_id or _new_id("resp"), now)
    mapped = usage if isinstance(usage, dict) and "input_tokens" in usage else map_usage(usage)
    response.update(
        status="completed",
        completed_at=int(time.time()),
        output=[compaction_item(summary, key=key, model=model, created_at=now)],
        usage=mapped or map_usage({}),
    )
    return response


def trigger_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream for `trigger_response`'s result: created, in_progress, output_item.added and
    .done of the compaction item (Codex builds its history from .done), completed."""
    start = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    item = response["output"][0]
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


# -------------------------------------------------------------------- as input


def has_compaction_items(items: Any) -> bool:
    return isinstance(items, list) and any(_type(i) == COMPACTION_TYPE for i in items)


def summary_message(summary: str) -> dict[str, Any]:
    """The input item standing in for a compaction item: the summary in a user message.

    A user message, not a system one: many chat templates refuse a system message anywhere but
    first, and every backend takes a user turn.
    """
    text = f"{_SUMMARY_HEADER}\n\n<summary>\n{summary}\n</summary>"
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


_KEPT_BEFORE = ("user", "system", "developer")


def expand_compaction_items(items: Any, *, key: str | None = None, first_client_index: int = 0) -> Any:
    """The input a chat backend can take, when it carries compaction items.

    The latest compaction item stands for everything before it: of those items only the
    user/system/developer messages are kept (the compacted window retains the user's words), then
    the summary (`summary_message`), then every item after it. Earlier compaction items are
    dropped (the later summary folded them in). Every compaction item is checked: a forged or
    corrupted one is `InvalidRequest` naming it. `first_client_index`: how many items at the front
    came from stored history rather than the request (so errors name the right ``input[i]``).
    """
    if not has_compaction_items(items):
        return items
    last = max(i for i, item in enumerate(items) if _type(item) == COMPACTION_TYPE)
    summary = ""
    for index, item in enumerate(items):
        if _type(item) == COMPACTION_TYPE:
            opened = open_compaction(
                item.get("encrypted_content"), key=key, param=_param(index, first_client_index)
            )
            if index == last:
                summary = opened["summary"]
    before = [
        item
        for item in items[:last]
        if isinstance(item, dict)
        and item.get("type", "message") == "message"
        and item.get("role") in _KEPT_BEFORE
    ]
    return [*before, summary_message(summary), *items[last + 1 :]]
