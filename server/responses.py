"""`POST /v1/responses`, top to bottom: read and check the request, prepare the turn (routing,
stored history, compaction, translation: `server.turn`, shared with the WebSocket mode), then one of
four answers: a background job (`queued` at once), one JSON response, an SSE stream fed by an
`EventPump`, or, for a final `compaction_trigger` item, the one compaction item
(`server.compact.trigger_answer`) as JSON or as its short stream.

A stored response is acknowledged only once it is written: the non-stream answer is 503
`store_unavailable` when the write fails, the stream's terminal event waits on the same write (in
the pump). Every error the client sees is `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import translator
from server.accesslog import AccessRecord
from server.background import BackgroundStart, background_stream, start_job
from server.body import read_request_body, read_responses_request
from server.commit import commit_or_503, response_commit
from server.compact import trigger_answer
from server.conversation_turn import with_conversation
from server.disconnect import cancel_on_disconnect
from server.errors import ApiError, JSONResponse, answer_or_error, shutting_down, translator_error
from server.limits import log_ceiling
from server.pump import EventPump
from server.responses_passthrough import relay_responses
from server.scope import ACCESS_KEY, OWNER_KEY, RESPONSES_ENDPOINT, TOKEN_KEY
from server.state import BridgeState
from server.streaming import EventStream
from server.turn import prepare_turn, request_secrets
from translator.compaction import trigger_events
from translator.sse import DONE_FRAME, encode_sse

__all__ = ["create_response"]

log = logging.getLogger("responses_bridge")


async def create_response(request: Request) -> Response | EventStream:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", RESPONSES_ENDPOINT)
    return await answer_or_error(record, _respond(request, state, record))


async def _respond(request: Request, state: BridgeState, record: AccessRecord) -> Response | EventStream:
    config = state.config
    if state.shutting_down:
        raise shutting_down()
    body = await read_request_body(request, config)
    asked = read_responses_request(body, strict=config.strict_params, limits=config.limits)
    record.model, record.stream = asked.model, asked.stream
    owner = request.scope.get(OWNER_KEY)
    token = request.scope.get(TOKEN_KEY)
    route = config.route(asked.model)
    if route is not None and route.upstream.api == "responses":  # a native Responses backend: relayed
        record.upstream = route.upstream.name
        client = state.clients[route.upstream.name]
        secrets = request_secrets(client.secrets, route.upstream.passthrough, token)
        return await relay_responses(asked.payload, route, client, token, secrets,  # type: ignore[return-value]
                                     record, config, lambda: state.shutting_down)  # fmt: skip

    compacted: dict[str, Any] | None = None
    try:
        async with cancel_on_disconnect(request.receive):
            turn = await prepare_turn(state, asked, owner=owner, token=token, history=state.store, route=route)
            record.upstream = turn.route.upstream.name
            items = turn.items
            if turn.triggered:  # Codex's in-band compaction: the answer is one compaction item
                compacted = await trigger_answer(turn, turn.request["input"])
            elif asked.background:
                job_record = AccessRecord("POST", RESPONSES_ENDPOINT)
                job_record.model, job_record.upstream, job_record.stream = asked.model, turn.route.upstream.name, True
                job_record.metrics = record.metrics  # the job's stream counts in the in-flight gauge
                start = BackgroundStart(
                    client=turn.client, chat_request=turn.chat_request(), translator=turn.stream_translator(),
                    input_items=items, owner=owner, token=token, secrets=turn.secrets, record=job_record,
                    store_requested=asked.store,
                )  # fmt: skip
                queued = await start_job(request.app, start)
                record.response_id = queued.get("id")
                if asked.stream:
                    return background_stream(request.app, queued["id"], owner=owner)
                return JSONResponse(queued)
            elif not asked.stream:
                completion = await turn.complete()
                record.mark_first_token()
                response = _translate_completion(completion, turn.request, turn.options, turn.route.upstream.name)
                response = with_conversation(response, turn.request)
            else:
                upstream_response = await turn.open_stream()
                stream_translator = turn.stream_translator()
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise translator_error(exc, config.secrets) from None

    if compacted is not None:
        response = compacted
    commit = response_commit(state, asked, items, owner)
    if not asked.stream:
        record.set_usage(response)
        answer = JSONResponse(response)  # encoded before the write: what is stored can be answered
        if commit is not None:
            await commit_or_503(commit, response)
        return answer

    if compacted is not None:  # one compaction item, stored like any response before it is answered
        record.set_usage(response)
        if commit is not None:
            await commit_or_503(commit, response)
        return Response(b"".join(encode_sse(event) for event in trigger_events(response)) + DONE_FRAME,
                        media_type="text/event-stream", headers={"cache-control": "no-cache"})  # fmt: skip

    pump = EventPump(upstream_response, stream_translator, upstream_name=turn.route.upstream.name,
                     secrets=turn.secrets, commit=commit, record=record, on_close=state.streams.discard)  # fmt: skip
    state.track(pump)
    return EventStream(pump, keepalive_interval=config.keepalive_interval)


# --------------------------------------------------------------------------------------- steps


def _translate_completion(
    completion: dict[str, Any], request: dict[str, Any], options: dict[str, Any], upstream_name: str
) -> dict[str, Any]:
    """The backend's whole answer as a Response (a `[limits]` ceiling that ended it is logged). A
    translator bug (anything but its own two error types) is logged and answered as a clean 500,
    never a traceback."""
    try:
        finished = translator.completion_translator(completion, request, **options)
        log_ceiling(finished, upstream_name, finished.id)
        return finished.response
    except (translator.InvalidRequest, translator.UpstreamError):
        raise
    except Exception:
        log.exception("translating the backend's answer failed")
        raise ApiError(500, "The bridge failed while translating the backend's answer.", code="server_error") from None


