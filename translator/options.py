"""Every quirk switch of the translator, with its default, in one place.

Backends disagree on small things (which role they accept, where reasoning goes, which token
limit field they read); each disagreement is one field here, so a backend profile is just a set of
keyword arguments. The table in docs/architecture.md documents the same names and defaults.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from .events import random_hex

__all__ = ["TranslatorOptions"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "developer_role": ("system", "developer"),
    "max_tokens_field": ("max_tokens", "max_completion_tokens"),
    "reasoning_replay": ("reasoning_content", "reasoning", "reasoning_details", "none"),
    "reasoning_effort": ("reasoning_effort", "openrouter", "deepseek", "none"),
    "reasoning_events": ("summary", "reasoning_text", "openresponses"),
    "custom_tools": ("function", "native", "reject"),
    "unsupported_tools": ("drop", "reject"),
    "error_event": ("none", "openai", "openresponses", "both"),
    "named_tool_choice": ("native", "required"),
    "tool_choice_none": ("native", "drop_tools"),
}


@dataclass(frozen=True, slots=True)
class TranslatorOptions:
    """Options accepted as keyword arguments by every translator entry point.

    ``named_tool_choice``: ``"native"`` sends a named ``tool_choice`` as chat's object
    (``{"type": "function", "function": {"name": ...}}``); ``"required"`` sends only the named tool
    in ``tools`` with ``tool_choice: "required"``, the same constraint in the one form backends such
    as llama.cpp understand (they accept only the strings auto/none/required and reject or ignore
    the object). ``allowed_tools`` with mode ``required`` becomes the same: the allowed tools and
    the string ``"required"``, whichever value this has.

    ``tool_choice_none``: ``"native"`` forwards ``tool_choice: "none"`` with the tools;
    ``"drop_tools"`` leaves ``tools`` and ``tool_choice`` out of the upstream request when the
    client said ``"none"``, for backends that call a tool anyway when they see tools (or reject
    ``"none"``): a model that is shown no tools can call none.

    ``max_output_items``: the most output items (messages, reasoning items, tool calls) one
    response may hold; a backend that streams more (a runaway loop, or a hostile peer opening a
    hundred thousand tool-call indexes) ends the response as ``failed`` with code
    ``upstream_too_large`` instead of the bridge building every item while other clients wait.

    ``max_output_tokens_ceiling``: the most output tokens one answer may hold, counted as it
    streams: the backend's own ``usage.completion_tokens`` when a chunk carries it (vLLM's
    continuous usage, llama.cpp), and for the text that came after the last such count an estimate
    of one token per 4 bytes of text, refusal, reasoning and tool-call arguments. The default is
    above any model's real output, so only a runaway or hostile backend that never stops reaches
    it; the answer then ends as ``incomplete`` with ``reason: "max_output_tokens"``, the status a
    backend's own length stop gives (the output so far is a well-formed answer cut short, and a
    client already knows how to treat that one), and the translator's ``ceiling_hit`` names this
    option so the caller can log it.

    ``completed_at`` is an addition to the documented table: it fixes the terminal timestamp so a
    test can compare a streamed response with a whole one byte for byte (otherwise it is "now").
    """

    developer_role: str = "system"
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = True
    reasoning_replay: str = "reasoning_content"
    reasoning_effort: str = "reasoning_effort"
    think_tags: bool = True
    reasoning_events: str = "summary"
    custom_tools: str = "function"
    unsupported_tools: str = "drop"
    openai_fields: bool = True
    error_event: str = "both"
    named_tool_choice: str = "native"
    tool_choice_none: str = "native"
    max_output_items: int = 1024
    max_output_tokens_ceiling: int = 262_144
    encryption_key: str | None = None
    response_id: str | None = None
    created_at: int | None = None
    completed_at: int | None = None

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"option {name}={value!r}: expected one of {', '.join(allowed)}")
        for name in ("response_id", "encryption_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"option {name} must be a string or None")
        for name in ("max_output_items", "max_output_tokens_ceiling"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TypeError(f"option {name} must be a positive integer")
        for name in ("created_at", "completed_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"option {name} must be an integer (seconds) or None")

    @classmethod
    def from_kwargs(cls, **options: Any) -> TranslatorOptions:
        """Build from keyword arguments; ``options=TranslatorOptions(...)`` may be passed as a base.

        Unknown names raise TypeError: a misspelt quirk switch silently doing nothing is worse.
        """
        base = options.pop("options", None)
        if base is not None:
            if not isinstance(base, TranslatorOptions):
                raise TypeError("options= must be a TranslatorOptions")
            return dataclasses.replace(base, **options) if options else base
        if not options:
            return _DEFAULT
        unknown = set(options) - _FIELDS
        if unknown:
            raise TypeError(f"unknown translator option(s): {', '.join(sorted(unknown))}")
        return cls(**options)

    def new_response_id(self) -> str:
        return self.response_id or "resp_" + random_hex()

    def now(self) -> int:
        return self.created_at if self.created_at is not None else int(time.time())


_FIELDS = {f.name for f in dataclasses.fields(TranslatorOptions)}
_DEFAULT = TranslatorOptions()


