"""TypedDicts documenting the plain dicts the translator takes and returns.

Nothing here is enforced at runtime (no pydantic on the hot path); these exist so editors and type
checkers know the shapes, and so a reader sees in one place what an event or item looks like.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ChatChunk",
    "ChatMessage",
    "ErrorBody",
    "FunctionCallItem",
    "MessageItem",
    "ReasoningItem",
    "ResponseObject",
    "StreamEvent",
    "Usage",
]


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    error: ErrorDetail


class ChatToolCallFunction(TypedDict, total=False):
    name: str
    arguments: str


class ChatToolCall(TypedDict, total=False):
    index: int
    id: str
    type: Literal["function", "custom"]
    function: ChatToolCallFunction
    extra_content: dict[str, Any]


class ChatMessage(TypedDict, total=False):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None
    refusal: str
    tool_calls: list[ChatToolCall]
    tool_call_id: str
    reasoning_content: str
    reasoning: str
    reasoning_details: list[dict[str, Any]]


class ChatChoiceDelta(TypedDict, total=False):
    index: int
    delta: ChatMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None


class ChatChunk(TypedDict, total=False):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoiceDelta]
    usage: dict[str, Any] | None
    error: dict[str, Any]


class OutputText(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]]
    logprobs: NotRequired[list[dict[str, Any]]]


class MessageItem(TypedDict):
    id: str
    type: Literal["message"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[dict[str, Any]]


class FunctionCallItem(TypedDict):
    id: str
    type: Literal["function_call"]
    status: Literal["in_progress", "completed", "incomplete"]
    call_id: str
    name: str
    arguments: str
    namespace: NotRequired[str]


class ReasoningItem(TypedDict):
    id: str
    type: Literal["reasoning"]
    status: Literal["in_progress", "completed", "incomplete"]
    summary: list[dict[str, Any]]
    content: NotRequired[list[dict[str, Any]]]
    encrypted_content: str | None


class Usage(TypedDict):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(TypedDict, total=False):
    id: str
    object: Literal["response"]
    created_at: int
    completed_at: int | None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    incomplete_details: dict[str, Any] | None
    model: str
    output: list[dict[str, Any]]
    usage: Usage | None
    error: dict[str, Any] | None
    # ...plus every request field echoed (see responses.response_skeleton)


class StreamEvent(TypedDict, total=False):
    type: str
    sequence_number: int
    response: ResponseObject
    output_index: int
    item: dict[str, Any]
    item_id: str
    content_index: int
    summary_index: int
    part: dict[str, Any]
    delta: str
    text: str
    arguments: str
    input: str
    logprobs: list[dict[str, Any]]
