"""`POST /v1/responses/compact`: a conversation in, its compacted window out (docs/compaction.md).

The bridge asks the backend model itself for the summary: `translator.compaction.summary_request`
builds a Responses body, which goes through the same translation and upstream client as any
non-streaming `POST /v1/responses` (so profiles, aliases, auth passthrough and the backend error
mapping all apply). The answer is ``{"id", "object": "response.compaction", "created_at", "output",
"usage"}``; nothing is stored (the window is not a response a later ``previous_response_id`` could
name, and the spec has the client start a new chain from it).

server/app.py is imported inside the handler, not at module level: app.py imports this module to
register the route, and the body reader, input resolution and error helpers live there.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server.accesslog import AccessRecord
from server.upstream import ApiError

__all__ = ["COMPACT_ENDPOINT", "compact_response"]

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


async def compact_response(request: Request) -> Response:
    from server import app as bridge

    state = request.app.state.bridge
    record: AccessRecord = request.scope.get(bridge.ACCESS_KEY) or AccessRecord("POST", COMPACT_ENDPOINT)
    try:
        return await _compact(request, state, record)
    except ApiError as exc:
        record.error_code = exc.code
        return bridge.error_response(exc)
    except bridge.ClientGone:
        record.status, record.error_code = 499, "client_disconnected"
        return Response(status_code=499)


def _check_body(payload: Any) -> dict[str, Any]:
    from server.app import invalid

    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid(
            "Missing required parameter: 'model' (a non-empty string).", "model", "missing_required_parameter"
        )
    for name, kinds in _FIELD_TYPES.items():
        value = payload.get(name)
        if value is not None and not isinstance(value, kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise invalid(f"Invalid type for '{name}': expected {expected}.", name, "invalid_type")
    if payload.get("input") is None and payload.get("previous_response_id") is None:
        raise invalid("Nothing to compact: send 'input', 'previous_response_id', or both.", "input",
                      "missing_required_parameter")  # fmt: skip
    return payload


async def _compact(request: Request, state: Any, record: AccessRecord) -> Response:
    import translator
    from server import app as bridge
    from translator import compaction

    config = state.config
    if state.shutting_down:
        raise ApiError(503, "The server is shutting down.", code="server_shutting_down")
    body = await bridge._read_body(request, config.max_body_bytes, min(config.timeouts.idle, 30.0))
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bridge.invalid(f"We could not parse the JSON body of your request: {exc.msg}.", None,
                             "invalid_json") from None  # fmt: skip
    payload = _check_body(payload)
    model = payload["model"]
    route = config.route(model)
    if route is None:
        raise ApiError(404, f"The model '{model}' does not exist or is not served by this bridge.",
                       type="invalid_request_error", param="model", code="model_not_found")  # fmt: skip
    client = state.clients[route.upstream.name]
    record.model, record.upstream, record.stream = model, route.upstream.name, False
    owner = request.scope.get(bridge.OWNER_KEY)
    token = request.scope.get(bridge.TOKEN_KEY)
    options = bridge._options(state, dict(route.upstream.options))
    key = options.get("encryption_key")
    lookup = {**payload, "input": payload.get("input") or []}
    try:
        async with bridge._cancel_on_disconnect(request.receive):
            resolved, own_items = await bridge._prepare_input(state, lookup, owner)
            # Items that came from stored history sit in front of the request's own (errors name them so).
            history = 0
            if payload.get("previous_response_id") is not None:
                history = len(resolved["input"]) - len(own_items)
            items, _ = compaction.split_compaction_trigger(resolved["input"])
            summary_body = compaction.summary_request(
                items, model=model, key=key, prompt_cache_key=payload.get("prompt_cache_key"),
                first_client_index=max(history, 0),
            )  # fmt: skip
            chat_request = translator.responses_to_chat_request(summary_body, **options)
            chat_request["model"] = route.model
            chat_request["stream"] = False
            chat_request.pop("stream_options", None)
            completion = await client.complete(chat_request, token)
            record.mark_first_token()
            answer = translator.chat_completion_to_response(completion, summary_body, **options)
            summary = compaction.summary_from_response(answer)
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise bridge._translator_error(exc, config.secrets) from None
    output = compaction.compaction_output(items, summary, key=key, model=model)
    resource = compaction.compaction_resource(output, completion.get("usage"))
    record.set_usage(resource)
    return bridge.JSONBytes(resource)
