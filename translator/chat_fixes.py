"""A chat request passed through to a chat backend, with the profile's request fixes applied.

When the client speaks chat and so does the backend, nothing is translated, but the quirks a
backend profile describes (translator/options.py) still hold: a backend that rejects the
``developer`` role rejects it from any client, one that reads only ``max_tokens`` ignores
``max_completion_tokens``, DeepSeek wants its own ``thinking`` switch. `fix_chat_request` applies
exactly the options that concern a chat request, one rule each, and leaves everything else as the
client sent it (the server owns routing and the model name).
"""

from __future__ import annotations

from typing import Any

from .options import TranslatorOptions

__all__ = ["OPENAI_ONLY_FIELDS", "fix_chat_request"]

#: Left out for backends whose profile says ``openai_fields = false`` (the forward direction does the same).
OPENAI_ONLY_FIELDS = ("metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "user",
                      "verbosity")
_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def _developer_role(messages: list[Any], opts: TranslatorOptions) -> list[Any]:
    if opts.developer_role != "system":
        return messages
    return [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m for m in messages]


def _reasoning_replay(messages: list[Any], opts: TranslatorOptions) -> list[Any]:
    """Replayed reasoning on assistant turns, in the field the backend reads (or dropped)."""
    target = opts.reasoning_replay
    if target == "reasoning_details":
        return messages
    out = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "assistant":
            present = [f for f in _REASONING_FIELDS if isinstance(m.get(f), str) and m.get(f)]
            if present and present != [target]:
                text = m[present[0]]
                m = {k: v for k, v in m.items() if k not in _REASONING_FIELDS}
                if target != "none":
                    m[target] = text
        out.append(m)
    return out


def fix_chat_request(request: dict[str, Any], **options: Any) -> dict[str, Any]:
    """``request`` with the profile's fixes applied (a new dict; the input is not changed)."""
    opts = TranslatorOptions.from_kwargs(**options)
    out = dict(request)
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = _reasoning_replay(_developer_role(messages, opts), opts)
    # one token limit, in the field the backend reads
    other = next(f for f in _LIMIT_FIELDS if f != opts.max_tokens_field)
    if out.get(other) is not None:
        value = out.pop(other)
        out.setdefault(opts.max_tokens_field, value)
    effort = out.get("reasoning_effort")
    if effort is not None and opts.reasoning_effort != "reasoning_effort":
        del out["reasoning_effort"]
        if opts.reasoning_effort == "openrouter":
            out.setdefault("reasoning", {"effort": effort})
        elif opts.reasoning_effort == "deepseek":
            out.setdefault("thinking", {"type": "disabled" if effort == "none" else "enabled"})
    if not opts.openai_fields:
        for name in OPENAI_ONLY_FIELDS:
            out.pop(name, None)
    choice = out.get("tool_choice")
    if choice == "none" and opts.tool_choice_none == "drop_tools":
        out.pop("tools", None)
        out.pop("tool_choice", None)
    elif isinstance(choice, dict) and choice.get("type") == "function" and opts.named_tool_choice == "required":
        name = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
        tools = out.get("tools")
        if isinstance(tools, list):
            out["tools"] = [t for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
                            and t["function"].get("name") == name]
            out["tool_choice"] = "required"
    return out
