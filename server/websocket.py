"""WebSocket mode of `/v1/responses` (docs/websocket.md): one connection, many turns, the same events.

A client opens `GET /v1/responses` with an upgrade, authenticated on the handshake like any `/v1/*`
request, and sends one text message per turn: `{"type": "response.create", ...the create body...}`
(no `stream_options` or `background`, no `stream` but the `true` Codex sends: the transport is the
stream). Each turn is the streaming `POST /v1/responses` of `server.responses`: the same request checks, routing, history, the
same `EventPump`; this module only puts each event of each batch in a text message of its own.

What belongs to the connection, and so is written here:
- one turn at a time: `response.create` messages received meanwhile wait in a bounded queue and run
  in order (`MAX_QUEUED` messages and `max_body_bytes` in all; past that the client is misbehaving
  and the connection is closed, 1008);
- the connection's memory (`ConnectionMemory`): the latest completed response and the conversation
  it ends, so a `store: false` continuation by `previous_response_id` works on this socket with no
  store; ids it does not hold fall through to the response store; a continuation that fails evicts
  the id it continued from;
- `generate: false` (a warm-up): a response with an id, no output and no backend call, which a later
  turn can continue from;
- errors before a turn's stream are `{"type": "error", "status": N, "error": {code, message, type,
  param}}`, and the connection stays open for the next turn;
- the age limit (`BridgeConfig.websocket_connection_limit`, 60 minutes): then an error
  `websocket_connection_limit_reached` after the turn in flight, and the connection is closed;
- a client that leaves mid-turn closes the pump, so the backend connection is closed with it.

Imports: the turn's steps (`server.turn`, `server.body`, `server.responses`' store write), the pump,
auth, access log. The app adds the route (`server.app`); nothing imports this module otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

import translator
from server.accesslog import AccessRecord, emit
from server.auth import caller_token, check_key, fingerprint
from server.body import JSONShapeMeter, check_responses_payload
from server.commit import response_commit
from server.compact import trigger_answer
from server.errors import ApiError, shutting_down, translator_error
from server.pump import TERMINAL_TYPES, EventPump, commit_terminal
from server.scope import RESPONSES_ENDPOINT, WS_DRAIN_KEY
from server.state import BridgeState
from server.turn import PreparedTurn, prepare_turn
from server.websocket_messages import error_event, read_create_message
from translator.compaction import trigger_events

__all__ = ["MAX_QUEUED", "ConnectionMemory", "responses_websocket"]

log = logging.getLogger("responses_bridge")

#: `response.create` messages a connection may have waiting behind the turn in flight.
MAX_QUEUED = 64
#: Close codes (RFC 6455 §7.4.1).
POLICY_VIOLATION = 1008
NORMAL_CLOSURE = 1000
SERVICE_RESTART = 1012

_UNAUTHORISED = "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
_LIMIT_MESSAGE = ("Responses websocket connection limit reached ({minutes}). Create a new websocket "
                  "connection to continue.")  # fmt: skip
#: A warm-up's stand-in for a backend answer: finished, empty, no tokens (the pump translates it).
_WARMUP_COMPLETION = {
    "id": "chatcmpl-warmup", "object": "chat.completion", "created": 0, "model": "warmup",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
}  # fmt: skip


# ------------------------------------------------------------------------------------------ memory


class ConnectionMemory:
    """The connection's latest response and the conversation it ends, in front of the response store.

    `prepare_input` (server/history.py) reads history through `conversation` and `get_item`, so this
    object stands where the store would: the latest response of this connection first, then the
    store (None when the bridge keeps nothing). One response is kept, as the spec asks for the most
    recent one; a long session holds one conversation per connection, never one per turn."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.latest_id: str | None = None
        self.latest_items: list[dict[str, Any]] = []

    def remember(self, response_id: str, conversation: list[dict[str, Any]]) -> None:
        self.latest_id, self.latest_items = response_id, conversation

    def evict(self, response_id: str | None) -> None:
        if response_id is not None and response_id == self.latest_id:
            self.latest_id, self.latest_items = None, []

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict[str, Any]] | None:
        if response_id == self.latest_id:
            return list(self.latest_items)
        if self.store is None:
            return None
        return await self.store.conversation(response_id, owner=owner)

    async def get_item(self, item_id: str, *, owner: str | None) -> dict[str, Any] | None:
        for item in self.latest_items:
            if item.get("id") == item_id:
                return item
        if self.store is None or not hasattr(self.store, "get_item"):
            return None
        return await self.store.get_item(item_id, owner=owner)


# ------------------------------------------------------------------------------------------ the route


async def responses_websocket(websocket: WebSocket) -> None:
    """`GET /v1/responses` upgraded: authenticate, then serve turns until either side leaves."""
    state: BridgeState = websocket.app.state.bridge
    config = state.config
    token = caller_token(websocket.scope["headers"])
    # A refused handshake gets no event: the close code says it (an HTTP 403 before the upgrade would
    # reach the client as a failed handshake with no reason at all).
    await websocket.accept()
    if config.api_keys and not check_key(token, config.api_keys):
        await websocket.close(POLICY_VIOLATION, _UNAUTHORISED)
        return
    owner = fingerprint(token) if config.api_keys else None
    connection = Connection(websocket, state, owner=owner, token=token)
    await connection.serve()


@dataclass
class Turn:
    """One `response.create` on its way through: what the access log and the memory need."""

    record: AccessRecord
    previous_id: str | None = None
    conversation: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False
    ended: bool = False  # the terminal event (or the error event) was sent


class Connection:
    """One upgraded connection: a reader (messages → queue, disconnect → cancel) and a worker (turns)."""

    def __init__(self, websocket: WebSocket, state: BridgeState, *, owner: str | None, token: str | None) -> None:
        self.websocket = websocket
        self.state = state
        self.config = state.config
        self.owner = owner
        self.token = token
        self.memory = ConnectionMemory(state.store)
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.queued_bytes = 0
        self.deadline = time.monotonic() + self.config.websocket_connection_limit
        self.closed = False
        self.busy = False  # a turn is in flight (from its message leaving the queue to its last event)
        websocket.scope[WS_DRAIN_KEY] = self._drain

    def _drain(self) -> float | None:
        """Shutdown, asked by the protocol (server/ws_protocol.py): None closes an idle connection now
        (1012, as uvicorn does); with a turn in flight, the turn gets the grace period the SSE streams
        get (its pump then ends it with `response.failed`), queued turns get a 503 error each, and the
        worker closes the connection itself (1012); the protocol waits that long at most."""
        self.state.begin_shutdown()  # already begun when a signal started the shutdown; idempotent
        if not self.busy:
            return None
        return self.config.shutdown_grace + 5

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        worker = loop.create_task(self._work())
        reader = loop.create_task(self._read())
        try:
            await asyncio.wait((worker, reader), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, worker):  # the client left (reader done) or the worker ended the connection
                task.cancel()
            for task in (reader, worker):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not self.closed:
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.websocket.close(NORMAL_CLOSURE)

    # ---------------------------------------------------------------------------- the two tasks

    async def _read(self) -> None:
        """Every client message into the queue; returns when the client disconnects."""
        receive = self.websocket.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            # Read on even while a turn runs (so a client leaving is seen at once), but bound what waits.
            if self.queue.qsize() >= MAX_QUEUED or self.queued_bytes + len(data) > self.config.max_body_bytes:
                log.warning("websocket client queued more than %d messages or %d bytes; closing",
                            MAX_QUEUED, self.config.max_body_bytes)  # fmt: skip
                self.closed = True
                await self.websocket.close(POLICY_VIOLATION, "Too many response.create messages queued.")
                return
            self.queued_bytes += len(data)
            self.queue.put_nowait(data)

    async def _work(self) -> None:
        """Turns in order, until the connection's age limit (then one error, and the close)."""
        limit = self.config.websocket_connection_limit
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    data = await self.queue.get()
            except TimeoutError:
                break
            self.queued_bytes -= len(data)
            self.busy = True
            try:
                await self._turn(data)
            finally:
                self.busy = False
            if self.closed:  # the client left during the turn
                return
            if self.state.shutting_down and self.queue.empty():  # the drain: last turn answered
                self.closed = True
                with contextlib.suppress(OSError, WebSocketDisconnect, RuntimeError):
                    await self.websocket.close(SERVICE_RESTART, "The server is shutting down.")
                return
        minutes = f"{limit / 60:g} minutes" if limit >= 60 else f"{limit:g} seconds"
        await self._send(error_event(ApiError(400, _LIMIT_MESSAGE.format(minutes=minutes),
                                              code="websocket_connection_limit_reached")))  # fmt: skip
        self.closed = True
        with contextlib.suppress(OSError, WebSocketDisconnect, RuntimeError):
            await self.websocket.close(NORMAL_CLOSURE, "websocket_connection_limit_reached")

    # ---------------------------------------------------------------------------------- one turn

    async def _turn(self, data: str | bytes) -> None:
        record = AccessRecord("WS", RESPONSES_ENDPOINT)
        record.stream = True
        turn = Turn(record)
        try:
            opened = await self._open(data, turn)
            if isinstance(opened, EventPump):
                await self._stream(opened, turn)
            else:
                await self._send_events(opened, turn)
        except ApiError as exc:
            turn.failed = True
            event = error_event(exc)
            record.status, record.error_code = event["status"], event["error"]["code"]
            turn.ended = await self._send(event)
        except Exception:  # a bridge bug: the client still gets an error in its shape, the socket lives on
            log.exception("WebSocket turn failed")
            turn.failed = True
            event = error_event(ApiError(500, "The bridge hit an internal error.", code="server_error"))
            record.status, record.error_code = 500, "server_error"
            turn.ended = await self._send(event)
        finally:
            if turn.failed:
                # A continuation that fails must not be retried from the same point by accident.
                self.memory.evict(turn.previous_id)
            if not turn.ended and record.error_code is None:  # cancelled: the client left mid-turn
                record.status, record.error_code = 499, "client_disconnected"
            emit(record, self.config.log_format)

    async def _open(self, data: str | bytes, turn: Turn) -> EventPump | list[dict[str, Any]]:
        """Check the message and start the turn's pump (the backend's stream, or a warm-up); for a
        compaction trigger, the whole answer's events (the summary call is not streamed)."""
        state, config, record = self.state, self.config, turn.record
        if state.shutting_down:
            raise shutting_down()
        if len(data) > config.max_body_bytes:
            raise ApiError(413, f"Message too large: the limit is {config.max_body_bytes} bytes.",
                           code="request_too_large")  # fmt: skip
        JSONShapeMeter(config.limits.request_max_json_containers).feed(data.encode() if isinstance(data, str) else data)
        body, generate = read_create_message(data)
        previous_id = body.get("previous_response_id")
        turn.previous_id = previous_id if isinstance(previous_id, str) else None
        asked = check_responses_payload(body, strict=config.strict_params, limits=config.limits)
        record.model = asked.model
        try:
            prepared = await prepare_turn(state, asked, owner=self.owner, token=self.token, history=self.memory)
            record.upstream = prepared.route.upstream.name
            if generate and prepared.triggered:
                response = await trigger_answer(prepared, prepared.request["input"])
                return await self._compaction_events(response, prepared, turn)
            if generate:
                upstream = await prepared.open_stream()
            else:
                prepared.chat_request()  # a warm-up is checked as the real turn would be
                upstream = httpx.Response(200, headers={"content-type": "application/json"},
                                          content=orjson.dumps(_WARMUP_COMPLETION))  # fmt: skip
            stream_translator = prepared.stream_translator()
        except (translator.InvalidRequest, translator.UpstreamError) as exc:
            raise translator_error(exc, config.secrets) from None
        # What this turn's response continues: the history it was built on (as the backend saw it,
        # after a truncation retry), then its own output; with no history, this request's own items
        # (they have ids, for `item_reference`s later).
        turn.conversation = list(prepared.request["input"]) if prepared.request is not asked.payload else list(prepared.items)
        commit = response_commit(state, asked, prepared.items, self.owner)
        pump = EventPump(upstream, stream_translator, upstream_name=prepared.route.upstream.name,
                         secrets=prepared.secrets, commit=commit, record=record,
                         on_close=state.streams.discard)  # fmt: skip
        state.track(pump)
        return pump

    async def _compaction_events(self, response: dict[str, Any], prepared: PreparedTurn,
                                 turn: Turn) -> list[dict[str, Any]]:  # fmt: skip
        """The events of a compaction answer, once its store write (if any) is done."""
        turn.conversation = list(prepared.request["input"])
        turn.record.set_usage(response)
        events = trigger_events(response)
        commit = response_commit(self.state, prepared.asked, prepared.items, self.owner)
        if commit is not None:
            released = await commit_terminal(events, commit)
            events = released if released is not None else []
        return events

    async def _send_events(self, events: list[dict[str, Any]], turn: Turn) -> None:
        turn.record.status = 200
        for event in events:
            if not await self._send(event):
                return
        if events and events[-1]["type"] in TERMINAL_TYPES:
            turn.ended = True
            self._settle(events[-1], turn)

    async def _stream(self, pump: EventPump, turn: Turn) -> None:
        """Each event of each batch as one text message; the terminal one updates the memory."""
        send = self.websocket.send
        dumps = orjson.dumps
        turn.record.status = 200
        try:
            async with contextlib.aclosing(pump.events()) as batches:
                async for batch in batches:
                    for event in batch:
                        await send({"type": "websocket.send", "text": dumps(event).decode()})
                    if pump.finished and batch and batch[-1]["type"] in TERMINAL_TYPES:
                        turn.ended = True
                        self._settle(batch[-1], turn)
        except (OSError, WebSocketDisconnect, RuntimeError):  # the client left while we wrote
            self.closed = True

    def _settle(self, terminal: dict[str, Any], turn: Turn) -> None:
        response = terminal.get("response")
        if terminal["type"] == "response.failed" or not isinstance(response, dict):
            turn.failed = True
            return
        output = [item for item in response.get("output") or [] if isinstance(item, dict)]
        self.memory.remember(str(response.get("id")), turn.conversation + output)

    async def _send(self, event: dict[str, Any]) -> bool:
        """One message outside a stream (an error envelope); False when the client is gone."""
        try:
            await self.websocket.send({"type": "websocket.send", "text": orjson.dumps(event).decode()})
        except (OSError, WebSocketDisconnect, RuntimeError):
            self.closed = True
            return False
        return True
