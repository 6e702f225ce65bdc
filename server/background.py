"""Background mode (``background: true``): run a response inside the server, not inside the request.

The request is answered at once with the response in status ``queued``; a task then runs the same
stream translation a streaming request would, writing every event to the store as it goes. Clients
poll ``GET /v1/responses/{id}``, replay and follow the events with ``GET /v1/responses/{id}?stream=true
&starting_after=N``, and stop the job with ``POST /v1/responses/{id}/cancel``.

Everything a second replica needs is in the store, so any replica can answer the polls, the streams
and the cancel:

* events are appended to the store before local readers are woken; a reader on another replica polls
  the store (every ``POLL_INTERVAL`` seconds while idle);
* cancel marks the stored response ``cancelled`` atomically (``store.request_cancel``); the replica that
  runs the job stops it at once when the cancel arrived locally, else its watcher sees
  ``cancel_requested`` within ``POLL_INTERVAL`` and cancels the task, which closes the upstream
  connection (the backend stops generating);
* the job's own status updates go through ``store.update_response``, which refuses to overwrite a
  cancelled response, so a cancel racing the last token always wins.

What the responses route calls (see docs/store.md):

* ``await start_job(app, BackgroundStart(...))`` → the queued response to answer with; the job opens
  the upstream and consumes an ``EventPump`` (server/pump.py) directly, the same pump an SSE response
  reads, so every guarantee of the streaming path (a terminal event on any fault) holds here too;
* ``await start_background(app, queued, input_items, run, owner=owner)``: the same for any ``run()``,
  an async iterator of event batches;
* ``background_stream(app, response_id, owner=owner, starting_after=None)`` → a streaming response,
  for ``background: true`` with ``stream: true``;
* ``await shutdown_background(app)`` in the lifespan's shutdown: jobs still running end ``failed``
  (code ``server_shutting_down``) instead of staying ``in_progress`` for ever.

A job's final response is written with ``store.update_response`` before its terminal event is
appended (``server.pump.commit_terminal``): followers never see an end the store does not hold, and
a failed write ends the job as ``failed`` with code ``store_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import StreamingResponse

from server.accesslog import AccessRecord
from server.conversation_turn import append_on_completion
from server.errors import ApiError
from server.pump import TERMINAL_TYPES, EventPump, commit_terminal
from server.store import TERMINAL_STATUSES, NullStore
from server.upstream import UpstreamClient
from translator.sse import DONE_FRAME, encode_sse

__all__ = [
    "POLL_INTERVAL",
    "BackgroundRunner",
    "BackgroundStart",
    "background_stream",
    "begin_background_shutdown",
    "runner_for",
    "shutdown_background",
    "start_background",
    "start_job",
]

log = logging.getLogger("responses_bridge")

#: How often an idle reader or a job's cancel watcher looks at the store (another replica's writes).
POLL_INTERVAL = 0.25
#: A comment line sent to an idle follower so proxies keep the connection open.
KEEPALIVE_INTERVAL = 15.0

RunStream = Callable[[], AsyncIterator[list[dict[str, Any]]]]


class BackgroundRunner:
    """The background jobs of one server process, and the wake-ups of their local followers."""

    def __init__(self, store: Any, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.shutting_down = False
        self._signals: dict[str, asyncio.Event] = {}

    # -- wake-ups ------------------------------------------------------------------------------------

    def signal(self, response_id: str) -> asyncio.Event:
        """The event set at the next change of ``response_id`` (take it BEFORE reading the store)."""
        event = self._signals.get(response_id)
        if event is None:
            event = self._signals[response_id] = asyncio.Event()
        return event

    def notify(self, response_id: str) -> None:
        event = self._signals.pop(response_id, None)
        if event is not None:
            event.set()

    # -- jobs ------------------------------------------------------------------------------------------

    async def start(
        self, queued: dict[str, Any], input_items: list[dict[str, Any]], run: RunStream, *, owner: str | None
    ) -> dict[str, Any]:
        """Store the queued response (durably), start the job, return what the client gets now."""
        response_id = queued["id"]
        queued = {**queued, "status": "queued", "background": True}
        await self.store.put(queued, input_items, owner=owner)
        task = asyncio.get_running_loop().create_task(
            self._job(queued, run, owner, input_items), name=f"background-{response_id}"
        )
        self.tasks[response_id] = task
        return queued

    async def _job(
        self, queued: dict[str, Any], run: RunStream, owner: str | None, input_items: list[dict[str, Any]]
    ) -> None:
        response_id = queued["id"]
        job = asyncio.current_task()
        assert job is not None
        watcher = asyncio.get_running_loop().create_task(self._watch_cancel(response_id, job))
        # ``pending`` is a final response not yet written; the terminal events of a normal run are
        # written here directly, the failure written in ``finally`` covers every other way out.
        pending: dict[str, Any] | None = None

        async def commit(response: dict[str, Any]) -> bool:
            # One transaction: the final status and, on a `conversation`, the turn's items; False
            # (cancelled meanwhile: the cancel wins) appends nothing.
            return await self.store.update_response(
                response, owner=owner, **append_on_completion(response, input_items)
            )

        try:
            async with contextlib.aclosing(run()) as stream:
                async for batch in stream:
                    events = [_mark_background(event, response_id) for event in batch]
                    final = next((e["response"] for e in events if e.get("type") in TERMINAL_TYPES
                                  and isinstance(e.get("response"), dict)), None)  # fmt: skip
                    if final is not None:
                        # Status first, events second: a client that saw the terminal event and then
                        # polls must find the response finished.
                        released = await commit_terminal(events, commit)
                        if released is None:
                            return  # cancelled (or deleted) meanwhile: the cancel wins
                        if released[-1] is not events[-1]:  # not stored: record the failure if we can
                            with contextlib.suppress(Exception):
                                await self.store.update_response(released[-1]["response"], owner=owner)
                        events = released
                    else:
                        for event in events:
                            if event.get("type") == "response.in_progress" and isinstance(event.get("response"), dict):
                                await self.store.update_response(event["response"], owner=owner)
                    if events:
                        await self.store.append_events(response_id, events)
                        self.notify(response_id)
                    if final is not None:
                        return
            pending = _failed(queued, "The response ended without a final event.", "server_error")
        except asyncio.CancelledError:
            # Cancelled through the API (the store already says so: nothing to write) or by a
            # shutdown (nobody will finish the job: record it as failed).
            if self.shutting_down:
                pending = _failed(queued, "The server shut down while the response was running.",
                                  "server_shutting_down")  # fmt: skip
            raise
        except Exception as exc:
            # An ApiError from opening the upstream (the backend refused) carries a message and a code
            # meant for the client; anything else is our bug and says only that.
            message = getattr(exc, "message", None)
            code = getattr(exc, "code", None)
            if not isinstance(message, str) or not message:
                log.exception("background response %s failed", response_id)
                message, code = f"The bridge failed while running the response ({type(exc).__name__}).", None
            pending = _failed(queued, message, code if isinstance(code, str) and code else "server_error")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if pending is not None:
                try:
                    if await self.store.update_response(pending, owner=owner):
                        # Followers get a terminal event too, numbered after the last one stored.
                        last = max((int(e["sequence_number"]) for e in await self.store.events(response_id, after=None)),
                                   default=-1)  # fmt: skip
                        failed_event = {"type": "response.failed", "sequence_number": last + 1, "response": pending}
                        await self.store.append_events(response_id, [failed_event])
                except Exception:
                    log.exception("storing background response %s failed", response_id)
            self.tasks.pop(response_id, None)
            self.notify(response_id)

    async def _watch_cancel(self, response_id: str, job: asyncio.Task[None]) -> None:
        """Stop the job when another replica (or a restart of this one) asked for a cancel."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if await self.store.cancel_requested(response_id):
                    job.cancel()
                    return
            except Exception:  # a database hiccup must not kill the job; look again later
                log.warning("could not check the cancel flag of %s", response_id, exc_info=True)

    async def cancel(self, response_id: str, *, owner: str | None) -> dict[str, Any] | None:
        """Mark the response cancelled (if still queued or in progress) and stop the local job."""
        response = await self.store.request_cancel(response_id, owner=owner)
        if response is None:
            return None
        task = self.tasks.get(response_id)
        if task is not None and response.get("status") == "cancelled":
            task.cancel()
            # Wait (briefly) so the upstream connection is closed when the cancel call returns.
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        self.notify(response_id)
        return response

    def begin_shutdown(self) -> None:
        """Start failing this process's jobs and ending its followers, without waiting.

        Call it as soon as the server decides to stop (before uvicorn waits for open connections):
        followers are open connections, and they end only when their job does."""
        self.shutting_down = True
        for task in list(self.tasks.values()):
            task.cancel()
        for response_id in list(self._signals):
            self.notify(response_id)

    async def shutdown(self) -> None:
        """Fail the jobs of this process (nobody will finish them after it exits) and wait for them."""
        tasks = list(self.tasks.values())
        self.begin_shutdown()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- following -------------------------------------------------------------------------------------

    async def follow(self, response_id: str, *, owner: str | None, after: int | None) -> AsyncIterator[bytes]:
        """SSE frames: the stored events after ``after``, then new ones as they come, until the response
        is finished. Works on any replica (the store is the source; local jobs only wake us sooner)."""
        last = -1 if after is None else after
        idle_since = time.monotonic()
        while True:
            wake = self.signal(response_id)
            events = await self.store.events(response_id, after=last)
            if events:
                last = int(events[-1]["sequence_number"])
                idle_since = time.monotonic()
                yield b"".join(encode_sse(event) for event in events)
                if any(event.get("type") in TERMINAL_TYPES for event in events):
                    break
                continue
            current = await self.store.get(response_id, owner=owner)
            if current is None or current.get("status") in TERMINAL_STATUSES:
                # One last look: the final events may have landed between the two reads.
                tail = await self.store.events(response_id, after=last)
                if tail:
                    yield b"".join(encode_sse(event) for event in tail)
                break
            if self.shutting_down and response_id not in self.tasks:
                # Stopping, and no job of ours will write more: end here. The client may resume on
                # another replica with starting_after (a job of another replica goes on there).
                break
            if time.monotonic() - idle_since >= KEEPALIVE_INTERVAL:
                idle_since = time.monotonic()
                yield b": keep-alive\n\n"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self.poll_interval)
        yield DONE_FRAME


def _mark_background(event: dict[str, Any], response_id: str) -> dict[str, Any]:
    """Snapshots inside events carry the job's id and ``background: true``, as the stored response does."""
    snapshot = event.get("response")
    if isinstance(snapshot, dict) and (snapshot.get("id") != response_id or snapshot.get("background") is not True):
        event = {**event, "response": {**snapshot, "id": response_id, "background": True}}
    return event


def _failed(response: dict[str, Any], message: str, code: str) -> dict[str, Any]:
    return {**response, "status": "failed", "error": {"code": code, "message": message}}


# ------------------------------------------------------------------------------- app-facing helpers


def runner_for(app: Any) -> BackgroundRunner:
    """The app's runner, created on first use around ``app.state.store``."""
    state = app.state
    runner = getattr(state, "background", None)
    store = getattr(state, "store", None)
    if runner is None or runner.store is not store:
        runner = BackgroundRunner(store)
        state.background = runner
    return runner


async def start_background(
    app: Any,
    queued: dict[str, Any],
    input_items: list[dict[str, Any]],
    run: RunStream,
    *,
    owner: str | None,
    store_requested: bool = True,
) -> dict[str, Any]:
    """Start a ``background: true`` response; returns the queued response to answer with.

    Raises ``ApiError`` (400) when the response cannot be kept: no store (``--store none``) or the
    request said ``store: false`` (OpenAI also requires ``store`` for background mode)."""
    if not store_requested:
        raise ApiError(400, "Background mode requires store=true.", type="invalid_request_error",
                       param="background", code="invalid_value")  # fmt: skip
    store = getattr(app.state, "store", None)
    if store is None or not getattr(store, "keeps_responses", True) or isinstance(store, NullStore):
        raise ApiError(400, "Background mode needs a response store, and this bridge runs with --store none.",
                       type="invalid_request_error", param="background", code="invalid_value")  # fmt: skip
    return await runner_for(app).start(queued, input_items, run, owner=owner)


def background_stream(
    app: Any, response_id: str, *, owner: str | None, starting_after: int | None = None
) -> StreamingResponse:
    """The SSE response following a background response from ``starting_after`` on."""
    frames = runner_for(app).follow(response_id, owner=owner, after=starting_after)
    return StreamingResponse(
        frames,
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def begin_background_shutdown(app: Any) -> None:
    """For the server's early shutdown hook (``BridgeState.begin_shutdown``): fail running jobs and end
    followers now, so uvicorn's wait for open connections does not wait on them."""
    runner = getattr(app.state, "background", None)
    if runner is not None:
        runner.begin_shutdown()


async def shutdown_background(app: Any) -> None:
    runner = getattr(app.state, "background", None)
    if runner is not None:
        await runner.shutdown()


@dataclass(frozen=True)
class BackgroundStart:
    """What a ``background: true`` request hands to its job: everything needed to open the upstream
    later and translate its answer, and what to store the response with."""

    client: UpstreamClient
    chat_request: dict[str, Any]
    translator: Any  # a ChatStreamTranslator, not started
    input_items: list[dict[str, Any]]
    owner: str | None
    token: str | None
    secrets: tuple[str, ...]
    record: AccessRecord  # the job's own access record (the request's ends with the queued answer)
    store_requested: bool = True  # False when the request said `store: false` (refused: 400)


async def start_job(app: Any, start: BackgroundStart) -> dict[str, Any]:
    """Store ``start`` as queued and run it: the upstream is opened inside the job, its answer read
    through an ``EventPump``. Returns the queued response."""

    async def run() -> AsyncIterator[list[dict[str, Any]]]:
        upstream = await start.client.open_stream({**start.chat_request, "stream": True}, start.token)
        pump = EventPump(upstream, start.translator, upstream_name=start.client.upstream.name,
                         secrets=start.secrets, record=start.record)  # fmt: skip
        async with contextlib.aclosing(pump.events()) as batches:
            async for batch in batches:
                yield batch

    queued = {**start.translator.response, "status": "queued", "background": True}
    return await start_background(app, queued, start.input_items, run, owner=start.owner,
                                  store_requested=start.store_requested)  # fmt: skip
