"""The event pump: one upstream chat response + one `ChatStreamTranslator` → batches of Responses events.

Every consumer of a translated stream (the SSE response in `server.streaming`, background jobs in
`server.background`, a WebSocket connection later) reads the same pump, so the guarantees below are
written once, here, and no consumer encodes events only to decode them again.

Interface::

    pump = EventPump(upstream, translator, upstream_name="ollama", secrets=(...,), commit=store_write)
    async with contextlib.aclosing(pump.events()) as batches:
        async for batch in batches:        # list[dict]: the events one upstream read caused
            write(batch)                   # encode as the transport wants (SSE frames, WS messages)
            if pump.finished:              # this batch holds the terminal event: tell the client so
                ...                        # (SSE: `[DONE]`); keep iterating so the backend
                                           # connection is drained back to its pool
    pump.abort("shutdown")                 # from anywhere: ends with `response.failed`, code
                                           # `server_shutting_down`, at the next safe point

- the first batch is `response.created` + `response.in_progress`, yielded before the backend is read,
  so a client knows at once that its stream is alive;
- one batch per upstream read, so a consumer that writes a batch as one message keeps frames whole
  and adds no latency;
- the last batch always ends with a terminal event (`response.completed` / `incomplete` / `failed`),
  whatever happens: an upstream cut (`upstream_error`), an idle timeout (`upstream_timeout`), a
  malformed chunk (`upstream_malformed_chunk`), an error chunk, a whole JSON body answered to a
  stream request, a shutdown (`server_shutting_down`), and any exception raised while translating,
  scrubbing or storing (`server_error`, from a last-resort event built from the response id alone);
- `commit(final_response)` (optional) runs before the terminal batch is released: a stored
  response is acknowledged only once its write committed. When it raises, the terminal event
  becomes `response.failed` with code `store_unavailable` (and the log says why); when it returns
  False (the store refused on purpose: cancelled meanwhile) the terminal batch is withheld and the
  pump ends. `commit_terminal` is the same step for a consumer holding a batch of its own;
- error chunks are scrubbed of `secrets` before the translator sees them (backends echo keys);
- closing the iterator early, or cancelling the task that iterates it (a client gone, a job
  cancelled), closes the backend connection, so the backend stops generating for nobody;
- `abort` interrupts only a read (by cancelling the iterating task there and catching that one
  cancellation itself), never a consumer's write, so no batch is cut in two and sequence numbers
  stay gapless. Call it on the loop's thread (`loop.call_soon_threadsafe` from elsewhere).

Other members: `events()` raises nothing but CancelledError; `finished` turns True when the terminal
batch is yielded (or withheld); `response_id`; `record` (the access-log record: usage, first token,
error code); `on_close(pump)` runs once when the iterator ends, however it ends.
`last_resort_frame(seq)` is the SSE bytes of the last-resort event, pre-encoded once the opening
batch is out (before the backend is read), for a consumer whose own encoding of a batch failed; `last_resort_event()` is the same as a dict.

Imports: the translator (SSE decoding, one-chunk conversion), `server.accesslog` (the record),
`server.upstream` (scrubbing). Nothing from the routes or the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson

from server.accesslog import AccessRecord
from server.limits import UpstreamLimitError, log_ceiling
from server.scrub import scrub_value
from translator import OUTPUT_DELTA_TYPES, TERMINAL_EVENT_TYPES, completion_to_chunk
from translator.errors import UpstreamError
from translator.sse import SSEDecoder

__all__ = ["STORE_UNAVAILABLE", "TERMINAL_TYPES", "Commit", "EventPump", "commit_terminal", "store_unavailable"]

log = logging.getLogger("responses_bridge")

TERMINAL_TYPES = TERMINAL_EVENT_TYPES

#: Writes the final response durably; False means "refused on purpose" (cancelled meanwhile).
Commit = Callable[[dict[str, Any]], Awaitable[bool | None]]
Batch = list[dict[str, Any]]

#: Events after which a client has seen output (so a failure can no longer be retried silently).
_OUTPUT_EVENT_TYPES = OUTPUT_DELTA_TYPES | {"response.output_item.added"}

_ABORTS = {"shutdown": ("The server is shutting down.", "server_shutting_down")}
_LAST_RESORT = {"code": "server_error", "message": "The bridge failed while streaming."}
STORE_UNAVAILABLE = "store_unavailable"


def store_unavailable(terminal: dict[str, Any]) -> dict[str, Any]:
    """The `response.failed` that replaces a terminal event whose response could not be stored."""
    final = terminal.get("response") if isinstance(terminal.get("response"), dict) else {}
    message = "The response could not be stored, so it was not kept; retry the request."
    response = {**final, "status": "failed", "incomplete_details": None,
                "error": {"code": STORE_UNAVAILABLE, "message": message}}  # fmt: skip
    return {"type": "response.failed", "sequence_number": terminal.get("sequence_number", 0), "response": response}


async def commit_terminal(batch: Batch, commit: Commit) -> Batch | None:
    """Run `commit` on the final response of `batch` (which ends with a terminal event) and return the
    batch to release: unchanged, ending in `store_unavailable` when the write raised, or None when
    the store refused it on purpose. A failed response whose write fails is released as it is."""
    terminal = batch[-1]
    final = terminal.get("response")
    if not isinstance(final, dict):
        return batch
    try:
        kept = await commit(final)
    except Exception as exc:
        if terminal["type"] == "response.failed":
            log.error("storing failed response %s failed: %r", final.get("id"), exc, exc_info=exc)
            return batch
        log.error("storing response %s failed, so it is answered as failed (%s): %r",
                  final.get("id"), STORE_UNAVAILABLE, exc, exc_info=exc)  # fmt: skip
        return [*batch[:-1], store_unavailable(terminal)]
    return None if kept is False else batch


def has_output(events: Batch) -> bool:
    return any(e["type"] in _OUTPUT_EVENT_TYPES for e in events)


class EventPump:
    """See the module docstring. One pump per response; `events()` may be iterated once."""

    def __init__(
        self,
        upstream: httpx.Response,
        translator: Any,
        *,
        upstream_name: str = "upstream",
        secrets: tuple[str, ...] = (),
        commit: Commit | None = None,
        record: AccessRecord | None = None,
        on_close: Callable[[EventPump], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.translator = translator
        self.upstream_name = upstream_name
        self.secrets = secrets
        self.commit = commit
        self.record = record if record is not None else AccessRecord("POST", "/v1/responses")
        self.on_close = on_close
        self.response_id: str = str(getattr(translator, "id", "") or "resp_unknown")
        #: True once the terminal batch was produced (or withheld); nothing follows it.
        self.finished = False
        self.abort_reason: str | None = None
        self._next_seq = 0
        self._reader: asyncio.Task[Any] | None = None
        self._reading = False
        self._cancelled_by_abort = False
        self._last_resort_json: bytes | None = None  # taken after the opening batch (`_last_resort`)

    # ---------------------------------------------------------------------------------- control

    def abort(self, reason: str = "shutdown") -> None:
        """End the stream early with `response.failed` (see `_ABORTS`). A read in progress is cancelled;
        otherwise the pump stops at its next read, so no batch is ever cut in two."""
        if self.finished or self.abort_reason is not None:
            return
        self.abort_reason = reason
        reader = self._reader
        if self._reading and reader is not None and not reader.done():
            self._cancelled_by_abort = True
            reader.cancel()

    def _abort_cancelled(self) -> bool:
        """Whether the cancellation being handled is `abort`'s alone (then the read ends in the abort
        batch; any other cancellation, e.g. the client leaving, propagates)."""
        reader = self._reader
        return self._cancelled_by_abort and reader is not None and reader.uncancel() == 0

    # ------------------------------------------------------------------------------ last resort

    def _last_resort(self) -> bytes:
        """The failed response of the last-resort event, encoded once: right after the opening batch
        (off the path to the first event; only `start()` touched the translator, so it is what the
        constructor would have taken), or sooner if a consumer needs it. Kept only encoded, as an
        exact-size `bytes`: orjson hands back its growth buffer (16 KiB for a response skeleton),
        which every held stream would otherwise keep."""
        if self._last_resort_json is None:
            failed = {"id": self.response_id, "status": "failed", "output": [], "error": dict(_LAST_RESORT)}
            try:
                encoded = orjson.dumps({**dict(self.translator.response), **failed})
            except Exception:  # a translator that cannot describe itself (or echoes the unencodable)
                encoded = orjson.dumps({"id": self.response_id, "object": "response", **failed})
            self._last_resort_json = bytes(memoryview(encoded))
        return self._last_resort_json

    def last_resort_event(self) -> dict[str, Any]:
        response = orjson.loads(self._last_resort())
        return {"type": "response.failed", "sequence_number": self._next_seq, "response": response}

    def last_resort_frame(self, sequence_number: int | None = None) -> bytes:
        """The last-resort event as one SSE frame, from pre-encoded bytes (no encoder involved).
        `sequence_number` defaults to the one after the last batch yielded; a consumer that could not
        send that batch passes the batch's first number, so the client sees no gap."""
        seq = self._next_seq if sequence_number is None else sequence_number
        return (b'event: response.failed\ndata: {"type":"response.failed","sequence_number":'
                + str(int(seq)).encode() + b',"response":' + self._last_resort() + b"}\n\n")  # fmt: skip

    # -------------------------------------------------------------------------------- iteration

    async def events(self) -> AsyncIterator[Batch]:
        """The batches (see the module docstring). Never raises except CancelledError."""
        inner = self._batches()
        metrics = self.record.metrics  # the streams-in-flight gauge (server/metrics.py), when on
        if metrics is not None:
            metrics.stream_opened(self.upstream_name)
        try:
            while True:
                try:
                    batch = await inner.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # translating, scrubbing or storing broke: end cleanly anyway
                    log.error("stream of %s failed; ending it as failed", self.response_id, exc_info=exc)
                    if not self.finished:
                        self.finished = True
                        self.record.error_code = "server_error"
                        yield [self.last_resort_event()]
                    break
                if not batch:
                    continue
                seq = batch[-1].get("sequence_number")
                if isinstance(seq, int):
                    self._next_seq = seq + 1
                if self.record.first_token is None and has_output(batch):
                    self.record.mark_first_token()
                yield batch
                del batch  # not kept alive while the next read waits (an idle stream holds only its state)
        finally:
            try:
                await inner.aclose()
            finally:
                if metrics is not None:
                    metrics.stream_closed(self.upstream_name)
                await self.upstream.aclose()
                if self.on_close is not None:
                    self.on_close(self)

    async def _batches(self) -> AsyncIterator[Batch]:
        translator = self.translator
        opening = translator.start()
        if opening:
            yield opening
        del opening
        self._last_resort()  # before anything can break, and after the first event went out
        if self.abort_reason is not None:
            yield await self._abort_batch()
            return
        if self.upstream.headers.get("content-type", "").startswith("application/json"):
            # Some backends ignore `stream: true` (tools on older Ollama): one JSON body instead.
            yield await self._whole_body()
            return
        raw_iter = self.upstream.aiter_raw().__aiter__()  # encoded answers never get here (server/transport.py)
        decoder = SSEDecoder()
        loads = orjson.loads
        saw_done = False
        self._reader = asyncio.current_task()
        while True:
            self._reading = True
            try:
                raw = await raw_iter.__anext__()
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if self._abort_cancelled():
                    yield await self._abort_batch()
                    return
                raise
            except (UpstreamLimitError, httpx.HTTPError) as exc:
                yield await self._fail(*self._read_failure(exc))
                return
            finally:
                self._reading = False
            try:
                out, saw_done = self._translate(decoder.feed(raw))
            except UpstreamError as exc:  # a frame over the decoder's ceiling: never buffered whole
                yield await self._fail(f"Upstream {self.upstream_name}: {exc.message}", "upstream_error")
                return
            del raw  # nothing of this read outlives it: a stream waiting on its backend holds no old chunk
            if out and out[-1]["type"] in TERMINAL_TYPES:
                yield await self._release(out)
                return
            if out:
                yield out
            del out
            if saw_done:
                break
            if self.abort_reason is not None:
                yield await self._abort_batch()
                return
        tail: Batch = []
        if not saw_done:  # a last frame that ended without a blank line
            for _name, data in decoder.close():
                if data == "[DONE]":
                    continue
                try:
                    chunk = loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(chunk, dict):
                    tail.extend(translator.feed(self._scrubbed(chunk)))
        if not translator.finished:
            # Without `[DONE]` and without a finish reason the answer was cut (the translator says so).
            tail.extend(translator.finish(done_seen=saw_done))
        yield await self._release(tail)
        if saw_done:
            await self._drain(raw_iter)

    def _read_failure(self, exc: Exception) -> tuple[str, str]:
        """(message, code) of a backend read that failed: a [limits] ceiling (which one), the idle
        timeout, or the connection."""
        if isinstance(exc, UpstreamLimitError):
            return str(exc).replace("the backend", self.upstream_name, 1), exc.code
        if isinstance(exc, httpx.TimeoutException):
            return f"Upstream {self.upstream_name} sent nothing for too long.", "upstream_timeout"
        return f"Upstream {self.upstream_name} connection failed mid-stream ({type(exc).__name__}).", "upstream_error"

    def _translate(self, frames: list[tuple[str | None, str]]) -> tuple[Batch, bool]:
        """One read's events, and whether `[DONE]` came: apart so that the read's chunks die with it
        (the generator's frame lives as long as the stream)."""
        out: Batch = []
        translator = self.translator
        for _name, data in frames:
            if data == "[DONE]":
                return out, True
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):
                what = "a malformed chunk" if chunk is None else "a chunk that is not an object"
                out.extend(self._failure(f"Upstream {self.upstream_name} sent {what}.", "upstream_malformed_chunk"))
                break
            out.extend(translator.feed(self._scrubbed(chunk)))
            if out and out[-1]["type"] in TERMINAL_TYPES:
                break
        return out, False

    async def _whole_body(self) -> Batch:
        # Read like a stream chunk: an abort (shutdown) cancels a stalled body, and a failed read is
        # the backend's fault with its own code, not a bridge error.
        self._reader, self._reading = asyncio.current_task(), True
        try:
            body = await self.upstream.aread()
        except asyncio.CancelledError:
            if self._abort_cancelled():
                return await self._abort_batch()
            raise
        except (UpstreamLimitError, httpx.HTTPError) as exc:
            return await self._fail(*self._read_failure(exc))
        finally:
            self._reading = False
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            return await self._fail(f"Upstream {self.upstream_name} sent a body that is not JSON.",
                                    "upstream_malformed_chunk")  # fmt: skip
        # An error body becomes an error chunk (the translator fails the stream); an answer becomes the
        # same single chunk `chat_completion_to_response` uses, so a whole body streams as it would translate.
        if completion.get("error") and not completion.get("choices"):
            chunk: dict[str, Any] = {"error": completion["error"]}
        else:
            chunk = completion_to_chunk(completion)
        events = self.translator.feed(self._scrubbed(chunk))
        if not self.translator.finished:
            events.extend(self.translator.finish())
        return await self._release(events)

    # ---------------------------------------------------------------------------------- helpers

    def _scrubbed(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if "error" in chunk and self.secrets:  # backends echo keys in error text
            return scrub_value(chunk, self.secrets)
        return chunk

    def _failure(self, message: str, code: str) -> Batch:
        return self.translator.fail(message, code)

    async def _fail(self, message: str, code: str) -> Batch:
        return await self._release(self._failure(message, code))

    async def _abort_batch(self) -> Batch:
        message, code = _ABORTS.get(self.abort_reason or "", _ABORTS["shutdown"])
        return await self._fail(message, code)

    async def _release(self, events: Batch) -> Batch:
        """The terminal step: usage to the access log, then the store write, then the batch."""
        if not events or events[-1]["type"] not in TERMINAL_TYPES:
            return events
        self.finished = True
        final = events[-1].get("response")
        self.record.set_usage(final if isinstance(final, dict) else None)
        log_ceiling(self.translator, self.upstream_name, self.response_id)
        if self.commit is None:
            return events
        released = await commit_terminal(events, self.commit)
        if released is None:
            return []
        if released[-1] is not events[-1]:
            self.record.error_code = STORE_UNAVAILABLE
        return released

    async def _drain(self, raw_iter: AsyncIterator[bytes]) -> None:
        """Read the little that follows `[DONE]` (the chunked terminator) so the backend connection
        goes back to the pool instead of being closed: a new TCP connect per request is costly.
        Runs after the consumer has the terminal batch; bounded, since a backend may linger."""
        try:
            async with asyncio.timeout(1.0):
                async for _ in raw_iter:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass
