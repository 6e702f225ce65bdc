"""`POST /v1/chat/completions` to a backend that speaks Responses (`api = "responses"`).

The chat request is translated (`translator.reverse_request`), sent to `{base_url}/responses` on the
upstream's pooled client, and the answer translated back (`translator.reverse`): a whole Response
into a chat completion, the SSE stream into chat chunks (`ResponsesEvents` reads it,
`TranslatedSource` writes it). A failure the backend reports before any output is answered as an
OpenAI error with an HTTP status, not a 200 stream; a later one is an error chunk and `[DONE]`
(docs/reverse.md §2). `open_responses` and `read_json` also serve server/responses_passthrough.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
from starlette.responses import Response

import translator
from server.accesslog import AccessRecord
from server.chat_request import ChatRequest, record_chat_usage
from server.chat_stream import ChunkStream, encode_chunk
from server.config import BridgeConfig, Route
from server.errors import ApiError, JSONResponse
from server.errors import shutting_down as shutdown_error
from server.limits import UpstreamLimitError
from server.scrub import scrub, scrub_value
from server.upstream import UpstreamClient
from translator.reverse import ResponsesStreamTranslator, chat_error
from translator.reverse_request import dropped_fields
from translator.sse import SSEDecoder

__all__ = ["ResponsesEvents", "TranslatedSource", "UpstreamBroken", "open_responses", "read_json", "translated"]

log = logging.getLogger("responses_bridge")


T = TypeVar("T")

#: Response error codes → the HTTP status a failure before any output is answered with.
_FAILURE_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400, "context_length_exceeded": 400,
                   "invalid_request_error": 400, "server_shutting_down": 503}
_LIFECYCLE = frozenset(("response.created", "response.in_progress", "response.queued"))


async def translated(asked: ChatRequest, route: Route, client: UpstreamClient, token: str | None,
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
        response = await read_json(upstream, client)
        record.mark_first_token()
        if isinstance(response, dict) and response.get("status") == "failed":
            raise _failure_error(_error_of(response), secrets)
        completion = translator.response_to_chat_completion(response)
        record_chat_usage(record, completion.get("usage"))
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
                raise shutdown_error()
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


async def read_json(response: httpx.Response, client: UpstreamClient) -> Any:
    """A whole Response, within the upstream's JSON size limit (`UpstreamClient.answer_json`)."""
    return await client.answer_json(response)


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
            record_chat_usage(self.record, tr.usage)
            self.record.response_id = tr.id
            if tr.error is not None:
                self.record.error_code = tr.error.get("code")
            await self.events.upstream.aclose()
