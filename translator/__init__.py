"""responses-bridge translation core: Chat Completions ⇄ Responses as pure functions.

Sans-IO in the manner of h11: plain dicts in, plain dicts out, no sockets, no asyncio, no global
state; only orjson is required. The server and library users go through these names only.
"""

from .errors import InvalidRequest, TranslatorError, UpstreamError
from .events import EVENT_TYPES, ITEM_ID_PREFIXES, OUTPUT_DELTA_TYPES, TERMINAL_EVENT_TYPES
from .options import TranslatorOptions
from .reasoning import pack_reasoning, unpack_reasoning
from .requests import (
    check_request,
    items_to_messages,
    messages_to_items,
    responses_to_chat_request,
)
from .responses import (
    chat_completion_to_response,
    completion_to_chunk,
    completion_translator,
    map_usage,
    response_to_chat_completion,
)
from .reverse_request import chat_to_responses_request
from .sse import DONE_FRAME, KEEPALIVE_FRAME, SSEDecoder, encode_sse
from .stream import ChatStreamTranslator, ResponsesStreamTranslator

__all__ = [
    "DONE_FRAME",
    "EVENT_TYPES",
    "ITEM_ID_PREFIXES",
    "KEEPALIVE_FRAME",
    "OUTPUT_DELTA_TYPES",
    "TERMINAL_EVENT_TYPES",
    "ChatStreamTranslator",
    "InvalidRequest",
    "ResponsesStreamTranslator",
    "SSEDecoder",
    "TranslatorError",
    "TranslatorOptions",
    "UpstreamError",
    "chat_completion_to_response",
    "chat_to_responses_request",
    "check_request",
    "completion_to_chunk",
    "completion_translator",
    "encode_sse",
    "items_to_messages",
    "map_usage",
    "messages_to_items",
    "pack_reasoning",
    "response_to_chat_completion",
    "responses_to_chat_request",
    "unpack_reasoning",
]
