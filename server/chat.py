"""`POST /v1/chat/completions`: chat clients on the same URL as Responses clients.

Per upstream, `api` (server/config.py) says what the backend speaks:

- `chat` (the default): the request passes through. The bridge applies only its own concerns:
  routing and aliases (the model name the backend knows), auth (middleware), the body limit, the
  access log, secret scrubbing of error text, and the profile's request fixes
  (`translator.chat_fixes`). The stream is relayed frame by frame and always ends with `[DONE]`.
- `responses`: the request is translated (`translator.reverse_request`), sent to
  `{base_url}/responses`, and the answer translated back (`translator.reverse`): the Responses
  SSE stream into chat chunks, a whole Response into a chat completion. A failure the backend
  reports before any output is answered as an OpenAI error with an HTTP status, not a 200 stream;
  a later one is an error chunk and `[DONE]` (docs/reverse.md §2).

The upstream call to a Responses backend reuses the upstream's pooled client (`UpstreamClient`):
same connection pool, auth header, timeouts and error mapping as chat calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

import translator
from server.accesslog import AccessRecord
from server.body import read_body
from server.chat_stream import ChunkStream, encode_chunk
from server.config import BridgeConfig, Limits, Route
from server.disconnect import ClientGone, cancel_on_disconnect
from server.errors import ApiError, JSONResponse, error_response, invalid, not_found, translator_error
from server.limits import UpstreamLimitError
from server.scope import ACCESS_KEY, TOKEN_KEY
from server.state import BridgeState
from server.upstream import UpstreamClient, scrub, scrub_value
from translator.chat_fixes import fix_chat_request
from translator.reverse import ResponsesStreamTranslator, chat_error
from translator.reverse_request import dropped_fields
from translator.sse import SSEDecoder

__all__ = ["CHAT_ENDPOINT", "create_chat_completion"]

log = logging.getLogger("responses_bridge")

CHAT_ENDPOINT = "/v1/chat/completions"
T = TypeVar("T")

#: Response error codes → the HTTP status a failure before any output is answered with.
_FAILURE_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400, "context_length_exceeded": 400,
                   "invalid_request_error": 400, "server_shutting_down": 503}
_LIFECYCLE = frozenset(("response.created", "response.in_progress", "response.queued"))


@dataclass(frozen=True)
class ChatRequest:
    """A `POST /v1/chat/completions` body that passed the server's checks."""

    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool


def read_chat_request(body: bytes, limits: Limits | None = None) -> ChatRequest:
    """Parse and check the body; every refusal is a 400 naming the field."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON body of your request: {exc.msg}.", None, "invalid_json") from None
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model' (a non-empty string).", "model", "missing_required_parameter")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("Missing required parameter: 'messages' (a non-empty array).", "messages",
                      "missing_required_parameter")  # fmt: skip
    if limits is not None:
        for name, ceiling, setting in (("messages", limits.request_max_input_items, "request_max_input_items"),
                                       ("tools", limits.request_max_tools, "request_max_tools")):
            value = payload.get(name)
            if isinstance(value, list) and len(value) > ceiling:
                raise invalid(f"'{name}' holds {len(value)} entries; the bridge's limit is {ceiling} "
                              f"(limits.{setting}).", name, "request_too_large")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type")
    include_usage = bool((options or {}).get("include_usage", False))
    return ChatRequest(payload, model, stream, include_usage)


async def create_chat_completion(request: Request) -> Response | ChunkStream:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", CHAT_ENDPOINT)
    try:
        return await _respond(request, state, record)
    except ApiError as exc:
        record.error_code = exc.code
        return error_response(exc)
    except ClientGone:
        record.status, record.error_code = 499, "client_disconnected"
        return Response(status_code=499)


async def _respond(request: Request, state: BridgeState, record: AccessRecord) -> Response | ChunkStream:
    config = state.config
    if state.shutting_down:
        raise ApiError(503, "The server is shutting down.", code="server_shutting_down")
    body = await read_body(request, config.max_body_bytes, min(config.timeouts.idle, 30.0),
                           max_json_containers=config.limits.request_max_json_containers)
    asked = read_chat_request(body, config.limits)
    route = config.route(asked.model)
    if route is None:
        raise not_found(f"The model '{asked.model}' does not exist or is not served by this bridge.", "model",
                        "model_not_found")  # fmt: skip
    record.model, record.upstream, record.stream = asked.model, route.upstream.name, asked.stream
    client = state.clients[route.upstream.name]
    token = request.scope.get(TOKEN_KEY)
    secrets = config.secrets + ((token,) if route.upstream.passthrough and token else ())
    try:
        async with cancel_on_disconnect(request.receive):
            def shutting_down() -> bool:
                return state.shutting_down

            if route.upstream.api == "responses":
                return await _translated(asked, route, client, token, secrets, record, config, shutting_down)
            return await _passthrough(asked, route, client, token, secrets, record, config, shutting_down)
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise translator_error(exc, secrets) from None


def _set_usage(record: AccessRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.input_tokens = usage.get("prompt_tokens")
        record.output_tokens = usage.get("completion_tokens")


# ------------------------------------------------------------------------------------- passthrough


async def _passthrough(asked: ChatRequest, route: Route, client: UpstreamClient, token: str | None,
                       secrets: tuple[str, ...], record: AccessRecord, config: BridgeConfig,
                       shutting_down: Callable[[], bool]) -> Response | ChunkStream:
    body = fix_chat_request(asked.payload, **dict(route.upstream.options))
    body["model"] = route.model
    if not asked.stream:
        completion = await client.complete(body, token)
        record.mark_first_token()
        _set_usage(record, completion.get("usage"))
        return JSONResponse(scrub_value(completion, secrets) if completion.get("error") else completion)
    upstream = await client.open_stream(body, token)
    source = RelaySource(upstream, client, secrets, record, asked.include_usage)
    return ChunkStream(source, keepalive_interval=config.keepalive_interval, shutting_down=shutting_down,
                       grace=config.shutdown_grace)


class RelaySource:
    """A chat backend's stream, relayed frame by frame (error chunks scrubbed of secrets).

    A stream that ends without `[DONE]` after its finish reason is complete (the tail is added);
    one that ends before any finish reason was cut, and says so in an error chunk."""

    def __init__(self, upstream: httpx.Response, client: UpstreamClient, secrets: tuple[str, ...],
                 record: AccessRecord, include_usage: bool) -> None:
        self.upstream = upstream
        self.client = client
        self.name = client.name
        self.secrets = secrets
        self.record = record
        self.include_usage = include_usage
        self.model = ""
        self.id = ""

    def failure(self, message: str, code: str) -> bytes:
        self.record.error_code = code
        return encode_chunk(chat_error(message, code))

    async def frames(self) -> AsyncIterator[bytes]:
        finished = errored = False
        try:
            if self.upstream.headers.get("content-type", "").startswith("application/json"):
                yield await self._whole_body()
                return
            decoder = SSEDecoder()
            reads = self.upstream.aiter_raw()  # the transport refuses encoded answers
            done = False
            try:
                async for raw in reads:
                    out: list[bytes] = []
                    for _name, data in decoder.feed(raw):
                        if data == "[DONE]":
                            done = True
                            break
                        try:
                            chunk = orjson.loads(data)
                        except orjson.JSONDecodeError:
                            chunk = None
                        if not isinstance(chunk, dict):
                            out.append(self.failure(f"Upstream {self.name} sent a malformed chunk.",
                                                    "upstream_malformed_chunk"))
                            errored = True
                            break
                        if "error" in chunk:
                            errored = True
                            self.record.error_code = "upstream_error"
                            out.append(encode_chunk(scrub_value(chunk, self.secrets)))
                            continue
                        finished = finished or self._note(chunk)
                        out.append(b"data: " + data.encode() + b"\n\n")
                    if out:
                        yield b"".join(out)
                    if done or errored:
                        break
            except UpstreamLimitError as exc:
                yield self.failure(str(exc).replace("the backend", self.name, 1), exc.code)
                return
            except httpx.TimeoutException:
                yield self.failure(f"Upstream {self.name} sent nothing for too long.", "upstream_timeout")
                return
            except httpx.HTTPError as exc:
                yield self.failure(f"Upstream {self.name} connection failed mid-stream ({type(exc).__name__}).",
                                   "upstream_error")
                return
            if not (done or finished or errored):
                yield self.failure(f"Upstream {self.name} ended the stream before the answer was complete.",
                                   "upstream_error")
        finally:
            await self.upstream.aclose()

    def _note(self, chunk: dict[str, Any]) -> bool:
        """Usage and first token for the access log; True when the chunk carries a finish reason."""
        _set_usage(self.record, chunk.get("usage"))
        finished = False
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                if choice.get("finish_reason"):
                    finished = True
                if self.record.first_token is None and choice.get("delta"):
                    self.record.mark_first_token()
        return finished

    async def _whole_body(self) -> bytes:
        """A backend that ignored `stream: true` and answered one JSON body: the same answer as chunks."""
        try:
            completion = orjson.loads(await self.client.read_json(self.upstream))
        except (orjson.JSONDecodeError, httpx.HTTPError):  # a limit error is an httpx error too
            completion = None
        if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
            error = completion.get("error") if isinstance(completion, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            return self.failure(scrub(message, self.secrets) if isinstance(message, str) and message
                                else f"Upstream {self.name} sent a body that is not a completion.", "upstream_error")
        frames = []
        base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
                "created": completion.get("created", 0), "model": completion.get("model", "")}
        for choice in completion["choices"]:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            delta = {k: v for k, v in message.items() if v is not None}
            if isinstance(delta.get("tool_calls"), list):
                delta["tool_calls"] = [{**c, "index": i} for i, c in enumerate(delta["tool_calls"]) if isinstance(c, dict)]
            index = choice.get("index", 0)
            frames.append(encode_chunk({**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                             "finish_reason": None}]}))
            frames.append(encode_chunk({**base, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                                             "finish_reason": choice.get("finish_reason") or "stop"}]}))
        _set_usage(self.record, completion.get("usage"))
        if self.include_usage and isinstance(completion.get("usage"), dict):
            frames.append(encode_chunk({**base, "choices": [], "usage": completion["usage"]}))
        return b"".join(frames)


# ------------------------------------------------------------------------------------- translated


async def _translated(asked: ChatRequest, route: Route, client: UpstreamClient, token: str | None,
                      secrets: tuple[str, ...], record: AccessRecord, config: BridgeConfig,
                      shutting_down: Callable[[], bool]) -> Response | ChunkStream:
    body = translator.chat_to_responses_request(asked.payload)
    body["model"] = route.model
    dropped = dropped_fields(asked.payload)
    if dropped:
        log.debug("chat request to %s: left out %s (no Responses counterpart)", route.upstream.name, dropped)
    if not asked.stream:
        body["stream"] = False
        upstream = await open_responses(client, body, token, stream=False)
        response = await _read_json(upstream, client)
        record.mark_first_token()
        if isinstance(response, dict) and response.get("status") == "failed":
            raise _failure_error(_error_of(response), secrets)
        completion = translator.response_to_chat_completion(response)
        _set_usage(record, completion.get("usage"))
        record.response_id = response.get("id") if isinstance(response, dict) else None
        return JSONResponse(completion)
    body["stream"] = True
    upstream = await open_responses(client, body, token, stream=True)
    events = ResponsesEvents(upstream, client)
    stream_translator = ResponsesStreamTranslator(asked.payload, include_usage=asked.include_usage, accumulate=False)
    try:
        prelude = await _unless_shutdown(events.first_output(), shutting_down, config.shutdown_grace)
    except BaseException:
        await upstream.aclose()
        raise
    first = next((e for e in prelude if e.get("type") not in _LIFECYCLE), None)
    failure = first if first is not None and first.get("type") in ("response.failed", "error") else None
    if failure is not None:  # failed before any output: an HTTP error the client's SDK raises
        await upstream.aclose()
        raise _failure_error(_error_of(failure), secrets)
    source = TranslatedSource(events, stream_translator, prelude, record, secrets)
    return ChunkStream(source, keepalive_interval=config.keepalive_interval, shutting_down=shutting_down,
                       grace=config.shutdown_grace)


async def _unless_shutdown(awaitable: Awaitable[T], shutting_down: Callable[[], bool], grace: float) -> T:
    """`awaitable`, unless a shutdown began and its grace ran out first (then a 503 before any stream)."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=0.25)
            if done:
                return task.result()
            if shutting_down():
                done, _ = await asyncio.wait((task,), timeout=grace)
                if done:
                    return task.result()
                raise ApiError(503, "The server is shutting down.", code="server_shutting_down")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _error_of(event_or_response: dict[str, Any]) -> dict[str, Any]:
    """The error object of a `response.failed` event, an `error` event or a failed Response."""
    response = event_or_response.get("response")
    if isinstance(response, dict):
        event_or_response = response
    error = event_or_response.get("error")
    if isinstance(error, dict):
        return error
    return {k: event_or_response.get(k) for k in ("message", "code", "param")}


def _failure_error(error: dict[str, Any], secrets: tuple[str, ...]) -> ApiError:
    code = error.get("code") if isinstance(error.get("code"), str) else "upstream_error"
    message = error.get("message") if isinstance(error.get("message"), str) and error.get("message") else \
        "The upstream backend failed the response."
    param = error.get("param") if isinstance(error.get("param"), str) else None
    return ApiError(_FAILURE_STATUS.get(code, 502), scrub(message, secrets), param=param, code=code)


async def open_responses(client: UpstreamClient, body: dict[str, Any], token: str | None, *,
                         stream: bool) -> httpx.Response:
    """POST `body` to the upstream's `/responses` (`UpstreamClient.post`: its pool, retries and
    error mapping); the caller owns and closes the response."""
    return await client.post("/responses", body, token, stream=stream)


async def _read_json(response: httpx.Response, client: UpstreamClient) -> Any:
    """A whole Response, within the upstream's JSON size limit."""
    name = client.name
    try:
        body = await client.read_json(response)
    except UpstreamLimitError as exc:
        raise ApiError(502, str(exc).replace("the backend", name, 1), code=exc.code) from None
    except httpx.TimeoutException:
        raise ApiError(504, f"Upstream {name} timed out sending its answer.", code="upstream_timeout") from None
    except httpx.HTTPError as exc:
        raise ApiError(502, f"Upstream {name} failed mid-answer: {type(exc).__name__}.", code="upstream_error") from None
    finally:
        await response.aclose()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(502, f"Upstream {name} returned a body that is not JSON.", code="upstream_error") from None


class UpstreamBroken(Exception):
    """The Responses stream broke (cut, timeout, malformed frame); `code` says how."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ResponsesEvents:
    """A Responses backend's SSE stream as lists of events, one list per upstream read.

    `[DONE]` ends it, and so does the end of the body (DeepSeek sends no `[DONE]`: its terminal
    event is the end); a missing `sequence_number` is not our concern. Breaks raise `UpstreamBroken`."""

    def __init__(self, upstream: httpx.Response, client: UpstreamClient) -> None:
        self.upstream = upstream
        self.client = client
        self.name = client.name
        self._decoder = SSEDecoder()
        self._raw = upstream.aiter_raw().__aiter__()  # the transport refuses encoded answers
        self.done = False

    async def first_output(self) -> list[dict[str, Any]]:
        """Events up to and including the first that is more than `created`/`in_progress`."""
        events: list[dict[str, Any]] = []
        async for batch in self.reads():
            events.extend(batch)
            if any(e.get("type") not in _LIFECYCLE for e in batch):
                break
        return events

    async def reads(self) -> AsyncIterator[list[dict[str, Any]]]:
        if self.upstream.headers.get("content-type", "").startswith("application/json"):
            yield await self._whole_body()
            self.done = True
            return
        while not self.done:
            try:
                raw = await self._raw.__anext__()
            except StopAsyncIteration:
                for _name, data in self._decoder.close():
                    event = self._parse(data)
                    if event is not None:
                        yield [event]
                self.done = True
                return
            except UpstreamLimitError as exc:  # the answer broke a [limits] ceiling: say which
                raise UpstreamBroken(str(exc).replace("the backend", self.name, 1), exc.code) from None
            except httpx.TimeoutException:
                raise UpstreamBroken(f"Upstream {self.name} sent nothing for too long.", "upstream_timeout") from None
            except httpx.HTTPError as exc:
                raise UpstreamBroken(f"Upstream {self.name} connection failed mid-stream ({type(exc).__name__}).",
                                     "upstream_error") from None
            batch = []
            for _name, data in self._decoder.feed(raw):
                event = self._parse(data)
                if event is None:
                    self.done = True
                    break
                batch.append(event)
            if batch:
                yield batch

    def _parse(self, data: str) -> dict[str, Any] | None:
        if data == "[DONE]":
            return None
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamBroken(f"Upstream {self.name} sent a malformed event.", "upstream_malformed_event") from None
        if not isinstance(event, dict):
            raise UpstreamBroken(f"Upstream {self.name} sent an event that is not an object.",
                                 "upstream_malformed_event")
        return event

    async def _whole_body(self) -> list[dict[str, Any]]:
        """A backend that ignored `stream: true`: its Response as the one terminal event it amounts to."""
        try:
            response = orjson.loads(await self.client.read_json(self.upstream))
        except (orjson.JSONDecodeError, httpx.HTTPError):
            raise UpstreamBroken(f"Upstream {self.name} sent a body that is not JSON.", "upstream_error") from None
        if not isinstance(response, dict):
            raise UpstreamBroken(f"Upstream {self.name} sent a body that is not a Response.", "upstream_error")
        status = response.get("status")
        kind = {"failed": "response.failed", "incomplete": "response.incomplete"}.get(str(status), "response.completed")
        if response.get("error") and "output" not in response:
            return [{"type": "error", "error": response["error"]}]
        return [{"type": "response.created", "response": response}, {"type": kind, "response": response}]


class TranslatedSource:
    """The Responses events, through `ResponsesStreamTranslator`, as chat chunk frames."""

    def __init__(self, events: ResponsesEvents, stream_translator: ResponsesStreamTranslator,
                 prelude: list[dict[str, Any]], record: AccessRecord, secrets: tuple[str, ...]) -> None:
        self.events = events
        self.translator = stream_translator
        self.prelude = prelude
        self.record = record
        self.secrets = secrets

    def failure(self, message: str, code: str) -> bytes:
        self.record.error_code = code
        chunks = self.translator.fail(message, code) or [chat_error(message, code)]
        return b"".join(encode_chunk(c) for c in chunks)

    def _frames(self, events: list[dict[str, Any]]) -> bytes:
        out: list[dict[str, Any]] = []
        for event in events:
            if event.get("type") in ("error", "response.failed") and self.secrets:
                event = scrub_value(event, self.secrets)
            out.extend(self.translator.feed(event))
            if self.translator.finished:
                break
        if self.record.first_token is None and any(
            c.get("choices") and any(ch.get("delta", {}).keys() - {"role"} for ch in c["choices"]) for c in out
        ):
            self.record.mark_first_token()
        return b"".join(encode_chunk(c) for c in out)

    async def frames(self) -> AsyncIterator[bytes]:
        tr = self.translator
        try:
            yield self._frames(self.prelude)
            if not tr.finished:
                try:
                    async for batch in self.events.reads():
                        body = self._frames(batch)
                        if body:
                            yield body
                        if tr.finished:
                            break  # a terminal event ends the answer, [DONE] or not
                except UpstreamBroken as broken:
                    yield self.failure(broken.message, broken.code)
                    return
            if not tr.finished:
                yield self.failure("The Responses stream ended without a terminal event.", "upstream_error")
        finally:
            _set_usage(self.record, tr.usage)
            self.record.response_id = tr.id
            if tr.error is not None:
                self.record.error_code = tr.error.get("code")
            await self.events.upstream.aclose()

