"""Compaction at the server (docs/compaction.md): `POST /v1/responses/compact`, and the summary call
behind it that a `compaction_trigger` turn of `POST /v1/responses` or a WebSocket uses too.

The bridge asks the backend model itself for the summary: `translator.compaction.summary_request`
builds a Responses body, which goes through the same translation and upstream client as any
non-streaming turn (so profiles, aliases, auth passthrough and the backend error mapping all apply).

`POST /v1/responses/compact` answers ``{"id", "object": "response.compaction", "created_at", "output",
"usage"}``; nothing is stored (the window is not a response a later ``previous_response_id`` could
name, and the spec has the client start a new chain from it). A trigger turn answers a Response whose
output is exactly one `compaction` item (`trigger_response`), stored like any response.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import translator
from server.accesslog import AccessRecord
from server.body import ResponsesRequest, json_object, parse_json, read_request_body, required_model
from server.disconnect import cancel_on_disconnect
from server.errors import JSONResponse, answer_or_error, invalid, shutting_down, translator_error
from server.scope import ACCESS_KEY, OWNER_KEY, TOKEN_KEY
from server.state import BridgeState
from server.turn import PreparedTurn, prepare_turn
from translator import compaction

__all__ = ["COMPACT_ENDPOINT", "compact_response", "summarise", "trigger_answer"]

COMPACT_ENDPOINT = "/v1/responses/compact"

#: The body fields the spec lists (others Codex sends, such as ``tools`` or ``reasoning``, are
#: accepted and ignored: the summariser needs neither) and their JSON types.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input": (str, list),
    "previous_response_id": (str,),
    "instructions": (str, list),
    "prompt_cache_key": (str,),
}
_TYPE_NAMES = {str: "a string", list: "an array"}


async def summarise(turn: PreparedTurn, items: Any) -> tuple[str, Any]:
    """The backend model's summary of `items` (the conversation, trigger removed) and its chat usage."""
    model = turn.asked.model
    summary_body = compaction.summary_request(
        items, model=model, key=turn.encryption_key,
        prompt_cache_key=turn.asked.payload.get("prompt_cache_key"), first_client_index=turn.history_length,
    )  # fmt: skip
    chat_request = turn.chat_request(summary_body)
    chat_request["stream"] = False
    chat_request.pop("stream_options", None)
    completion = await turn.client.complete(chat_request, turn.token)
    answer = translator.chat_completion_to_response(completion, summary_body, **turn.options)
    return compaction.summary_from_response(answer), completion.get("usage")


async def trigger_answer(turn: PreparedTurn, items: Any) -> dict[str, Any]:
    """The completed Response of a turn whose last input item was `compaction_trigger`."""
    summary, usage = await summarise(turn, items)
    return compaction.trigger_response(turn.request, summary, usage, key=turn.encryption_key,
                                       model=turn.asked.model)  # fmt: skip


async def compact_response(request: Request) -> Response:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", COMPACT_ENDPOINT)
    return await answer_or_error(record, _compact(request, state, record))


async def _compact(request: Request, state: BridgeState, record: AccessRecord) -> Response:
    config = state.config
    if state.shutting_down:
        raise shutting_down()
    body = await read_request_body(request, config)
    payload = _check_body(body)
    record.model = payload["model"]
    asked = ResponsesRequest({**payload, "input": payload.get("input") or []}, payload["model"], False, False,
                             False)  # fmt: skip
    try:
        async with cancel_on_disconnect(request.receive):
            turn = await prepare_turn(state, asked, owner=request.scope.get(OWNER_KEY),
                                      token=request.scope.get(TOKEN_KEY), history=state.store,
                                      summarising=True)  # fmt: skip
            record.upstream = turn.route.upstream.name
            items, _ = compaction.split_compaction_trigger(turn.request["input"])
            summary, usage = await summarise(turn, items)
            record.mark_first_token()
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise translator_error(exc, config.secrets) from None
    key = turn.encryption_key
    output = compaction.compaction_output(items, summary, key=key, model=asked.model)
    resource = compaction.compaction_resource(output, usage)
    record.set_usage(resource)
    return JSONResponse(resource)


def _check_body(body: bytes) -> dict[str, Any]:
    payload = json_object(parse_json(body))
    required_model(payload)
    for name, kinds in _FIELD_TYPES.items():
        value = payload.get(name)
        if value is not None and not isinstance(value, kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise invalid(f"Invalid type for '{name}': expected {expected}.", name, "invalid_type")
    if payload.get("input") is None and payload.get("previous_response_id") is None:
        raise invalid("Nothing to compact: send 'input', 'previous_response_id', or both.", "input",
                      "missing_required_parameter")  # fmt: skip
    return payload
