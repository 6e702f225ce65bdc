"""What a conversation may hold, and how it keeps it (docs/conversations.md).

The item rules (each item type's required fields and their JSON types), the stored form OpenAI lists
conversation items in (`stored_form`), the `items` and `metadata` parameter checks, and the two
errors about a conversation (`missing_conversation`, `conversation_unavailable`). Why a module: the
Conversations routes (server/conversations.py) and the responses path (server/conversation_turn.py)
both store items and answer for a missing conversation, and must do it the same way.
"""

from __future__ import annotations

from typing import Any

from server.errors import ApiError, invalid, not_found
from server.store import StoreUnavailable

__all__ = [
    "MAX_ITEMS_PER_CALL",
    "MAX_METADATA_KEY",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_VALUE",
    "conversation_unavailable",
    "items_param",
    "metadata_param",
    "missing_conversation",
    "stored_form",
]

#: Items one create / add call may carry (OpenAI's limit; clients send more in chunks).
MAX_ITEMS_PER_CALL = 20
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
#: What an item of each type must carry: field → accepted JSON types. Checked on every item a
#: client adds, so a conversation never holds an item that would fail every later response on it.
_ITEM_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "message": {"role": (str,), "content": (str, list)},
    "function_call": {"call_id": (str,), "name": (str,), "arguments": (str,)},
    "function_call_output": {"call_id": (str,), "output": (str, list)},
    "custom_tool_call": {"call_id": (str,), "name": (str,), "input": (str,)},
    "custom_tool_call_output": {"call_id": (str,), "output": (str, list)},
    "reasoning": {"summary": (list,)},
}
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
#: Item types that get `status: "completed"` when stored without one, as OpenAI's stored items have.
_STATUS_TYPES = frozenset({"message", "function_call", "function_call_output", "custom_tool_call",
                           "custom_tool_call_output"})  # fmt: skip


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = item.get("type", "message" if "role" in item else None)
    rules = _ITEM_FIELDS.get(kind) if isinstance(kind, str) else None
    if rules is None:
        known = ", ".join(sorted(_ITEM_FIELDS))
        raise invalid(f"Invalid value for '{where}.type': {kind!r} is not an item type this bridge keeps "
                      f"({known}).", f"{where}.type", "invalid_value")  # fmt: skip
    for name, kinds in rules.items():
        if not isinstance(item.get(name), kinds):
            raise invalid(f"Missing or invalid '{where}.{name}'.", f"{where}.{name}", "invalid_value")
    if kind == "message" and item["role"] not in _MESSAGE_ROLES:
        raise invalid(f"Invalid value for '{where}.role': {item['role']!r}.", f"{where}.role", "invalid_value")
    if kind == "message" and isinstance(item["content"], list):
        for index, part in enumerate(item["content"]):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                spot = f"{where}.content[{index}]"
                raise invalid(f"Invalid '{spot}': expected a content part object with a type.", spot, "invalid_value")
    item_id = item.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise invalid(f"Invalid type for '{where}.id': expected a string.", f"{where}.id", "invalid_type")


def _stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """One item in the form OpenAI lists conversation items: `type` set, message content as parts
    (`input_text` for user/system/developer, `output_text` with `annotations` for the assistant),
    `status: "completed"` on messages and tool calls/outputs. Ids are left to the store."""
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind not in _STATUS_TYPES:
        return item
    out = dict(item)
    out["type"] = kind
    if kind == "message":
        part_type = "output_text" if out.get("role") == "assistant" else "input_text"
        content = out.get("content")
        if isinstance(content, str):
            content = [{"type": part_type, "text": content}]
        if isinstance(content, list):
            content = [
                {**part, "annotations": []}
                if isinstance(part, dict) and part.get("type") == "output_text" and "annotations" not in part
                else part
                for part in content
            ]
        out["content"] = content
    out.setdefault("status", "completed")
    if out.get("status") is None:
        out["status"] = "completed"
    return out


def stored_form(items: list[Any]) -> list[Any]:
    """`items` as a conversation keeps them (see `_stored_item`); non-objects are left as they are."""
    return [_stored_item(item) if isinstance(item, dict) else item for item in items]


def items_param(value: Any, name: str, *, required: bool) -> list[dict[str, Any]]:
    if value is None:
        if required:
            raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        return []
    if not isinstance(value, list):
        raise invalid(f"Invalid type for '{name}': expected an array.", name, "invalid_type")
    if len(value) > MAX_ITEMS_PER_CALL:
        raise invalid(f"Invalid '{name}': array too long. Expected an array with maximum length "
                      f"{MAX_ITEMS_PER_CALL}, but got an array with length {len(value)} instead.", name,
                      "array_above_max_length")  # fmt: skip
    for index, item in enumerate(value):
        _check_item(item, f"{name}[{index}]")
    return stored_form(value)


def metadata_param(value: Any) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 pairs, string keys ≤ 64 characters, string values ≤ 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise invalid(f"Invalid 'metadata': too many properties. Expected an object with at most "
                      f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties instead.",
                      "metadata", "object_above_max_properties")  # fmt: skip
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid(f"Invalid 'metadata': the key '{key[:20]}…' is {len(key)} characters long; keys can be "
                          f"at most {MAX_METADATA_KEY}.", "metadata", "invalid_value")  # fmt: skip
        if not isinstance(item, str):
            raise invalid(f"Invalid type for 'metadata.{key}': expected a string.", f"metadata.{key}", "invalid_type")
        if len(item) > MAX_METADATA_VALUE:
            raise invalid(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                          f"{MAX_METADATA_VALUE}, but got a string with length {len(item)} instead.",
                          f"metadata.{key}", "string_above_max_length")  # fmt: skip
    return value


# ---------------------------------------------------------------------------------------- errors


def missing_conversation(conversation_id: str, param: str = "conversation_id") -> ApiError:
    return not_found(f"Conversation with id '{conversation_id}' not found.", param)


def conversation_unavailable(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, "The conversation store is unavailable; retry the request.", code="store_unavailable")
