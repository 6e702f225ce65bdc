"""Conversation state for `POST /v1/responses`: the stored history `previous_response_id` names,
`item_reference` inputs resolved, and this request's input items with ids (to store with the answer).

The one place a request READS the store; writes happen when the answer is final (`server.pump`).
"""

from __future__ import annotations

from typing import Any

from server.conversation_turn import conversation_history, conversation_of
from server.errors import invalid, not_found
from translator.events import ITEM_ID_PREFIXES, random_hex

__all__ = ["item_id", "normalise_input", "prepare_input"]

def item_id(kind: str) -> str:
    """A fresh id for an input item of type `kind` (prefixes: translator/events.py, the one table)."""
    return f"{ITEM_ID_PREFIXES.get(kind, 'item_')}{random_hex()}"


def normalise_input(value: Any) -> list[dict[str, Any]]:
    """This request's input as items, each with an id (string input → one user message item)."""
    if isinstance(value, str):
        return [{"type": "message", "id": item_id("message"), "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]  # fmt: skip
    items: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and not item.get("id") and item.get("type") != "item_reference":
            item = {**item, "id": item_id(item.get("type") or "message")}
        items.append(item)
    return items


async def prepare_input(
    store: Any, payload: dict[str, Any], owner: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request the translator sees (stored history prepended, item references resolved) and the
    input items to store with the answer. `store` is None when the bridge keeps nothing."""
    previous_id = payload.get("previous_response_id")
    conversation_id = conversation_of(payload)  # a 400 with previous_response_id too
    raw_input = payload.get("input")
    has_refs = isinstance(raw_input, list) and any(
        isinstance(i, dict) and i.get("type") == "item_reference" for i in raw_input
    )
    if previous_id is None and conversation_id is None and not has_refs:
        return payload, normalise_input(raw_input) if store is not None else []
    if previous_id is not None and not isinstance(previous_id, str):
        raise invalid("previous_response_id must be a string.", "previous_response_id")
    history: list[dict[str, Any]] = []
    if conversation_id is not None:  # its items come first, oldest first (404 when missing)
        history = await conversation_history(store, conversation_id, owner)
    if previous_id is not None:
        if store is None:
            raise not_found(f"Previous response with id '{previous_id}' not found: this bridge runs without a "
                            "response store (--store none).", "previous_response_id", "previous_response_not_found")  # fmt: skip
        chain = await store.conversation(previous_id, owner=owner)
        if chain is None:
            raise not_found(f"Previous response with id '{previous_id}' not found.", "previous_response_id",
                            "previous_response_not_found")  # fmt: skip
        history = list(chain)
    items = normalise_input(raw_input)
    if has_refs:
        items = await _resolve_references(store, items, history, owner)
    return {**payload, "input": history + items}, items


async def _resolve_references(
    store: Any, items: list[dict[str, Any]], history: list[dict[str, Any]], owner: str | None
) -> list[dict[str, Any]]:
    """Each `item_reference` replaced by the item it names: from the history first, then the store."""
    by_id = {i.get("id"): i for i in history if isinstance(i, dict)}
    resolved: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not (isinstance(item, dict) and item.get("type") == "item_reference"):
            resolved.append(item)
            continue
        found = by_id.get(item.get("id"))
        if found is None and store is not None and hasattr(store, "get_item"):
            found = await store.get_item(item.get("id"), owner=owner)
        if found is None:
            raise not_found(f"Item with id '{item.get('id')}' not found.", f"input[{index}].id", "item_not_found")
        resolved.append(found)
    return resolved
