"""`POST /v1/responses` to an upstream with `api = "responses"`: no translation, the request goes to
the backend's own `/responses` (model name from routing) and the answer comes back as it is.

So the mixed-client gateway of docs/reverse.md works both ways round: Codex and other Responses
clients reach a Responses-only backend through the same URL and routing as chat clients. The bridge
keeps its own concerns: auth, routing and aliases, the body limits, the access log, secret scrubbing
of error text, and the stream's end: events are relayed frame by frame (whole frames per write), the
stream ends at the backend's terminal event (whether or not `[DONE]` follows: DeepSeek sends none)
and always with `data: [DONE]`; a stream cut before its terminal event gets a `response.failed`
(code `upstream_error`) first. Storage, `previous_response_id` and background jobs are the
backend's: the request reaches it unchanged, and the bridge stores nothing of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from server.accesslog import AccessRecord
from server.chat_stream import ChunkStream
from server.chat_translated import open_responses, read_json
from server.config import BridgeConfig, Route
from server.errors import JSONResponse
from server.scrub import scrub_value
from server.upstream import UpstreamClient
from translator.sse import SSEDecoder, json_object

__all__ = ["relay_responses"]

_TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))


async def relay_responses(payload: dict[str, Any], route: Route, client: UpstreamClient, token: str | None,
                          secrets: tuple[str, ...], record: AccessRecord, config: BridgeConfig,
                          shutting_down: Callable[[], bool]) -> JSONResponse | ChunkStream:
    """The backend's own answer to `payload` (its model replaced by the routed one)."""
    body = {**payload, "model": route.model}
    if not payload.get("stream"):
        upstream = await open_responses(client, body, token, stream=False)
        response = await read_json(upstream, client)
        record.mark_first_token()
        if isinstance(response, dict):
            record.set_usage(response)
            if response.get("error"):
                response = scrub_value(response, secrets)
        return JSONResponse(response)
    upstream = await open_responses(client, body, token, stream=True)
    source = EventRelay(upstream, client.name, secrets, record)
    return ChunkStream(source, keepalive_interval=config.keepalive_interval, shutting_down=shutting_down,
                       grace=config.shutdown_grace)


def _frame(name: str | None, data: str) -> bytes:
    head = f"event: {name}\n" if name else ""
    return (head + "data: " + data + "\n\n").encode()


class EventRelay:
    """A Responses SSE stream relayed frame by frame (a `ChunkSource` for `ChunkStream`)."""

    def __init__(self, upstream: httpx.Response, name: str, secrets: tuple[str, ...], record: AccessRecord) -> None:
        self.upstream = upstream
        self.name = name
        self.secrets = secrets
        self.record = record
        self.response: dict[str, Any] = {}
        self.next_seq = 0

    def failure(self, message: str, code: str) -> bytes:
        """A `response.failed` for the response this stream was about, as one frame."""
        self.record.error_code = code
        response = {**self.response, "object": "response", "status": "failed",
                    "error": {"code": code, "message": message}}
        response.setdefault("id", "resp_unknown")
        event = {"type": "response.failed", "sequence_number": self.next_seq, "response": response}
        return _frame("response.failed", orjson.dumps(event).decode())

    async def frames(self) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        ended = False
        try:
            async for raw in self.upstream.aiter_raw():
                out: list[bytes] = []
                for name, data in decoder.feed(raw):
                    if data == "[DONE]":
                        ended = True
                        break
                    event = json_object(data)
                    if event is None:
                        out.append(self.failure(f"Upstream {self.name} sent a malformed event.",
                                                "upstream_malformed_event"))
                        ended = True
                        break
                    kind = event.get("type")
                    if isinstance(event.get("response"), dict):
                        self.response = {k: v for k, v in event["response"].items() if k in ("id", "model", "created_at")}
                    if isinstance(event.get("sequence_number"), int):
                        self.next_seq = event["sequence_number"] + 1
                    if kind in ("error", "response.failed") and self.secrets:
                        data = orjson.dumps(scrub_value(event, self.secrets)).decode()
                    if self.record.first_token is None and isinstance(kind, str) and kind.endswith(".delta"):
                        self.record.mark_first_token()
                    out.append(_frame(name or (kind if isinstance(kind, str) else None), data))
                    if kind in _TERMINAL:
                        self.record.set_usage(event.get("response") if isinstance(event.get("response"), dict) else None)
                        ended = True
                        break
                if out:
                    yield b"".join(out)
                if ended:
                    return
            yield self.failure(f"Upstream {self.name} ended the stream without a terminal event.", "upstream_error")
        except httpx.TimeoutException:
            yield self.failure(f"Upstream {self.name} sent nothing for too long.", "upstream_timeout")
        except httpx.HTTPError as exc:
            yield self.failure(f"Upstream {self.name} connection failed mid-stream ({type(exc).__name__}).",
                               "upstream_error")
        finally:
            await self.upstream.aclose()
