"""`POST /v1/chat/completions` to a chat backend (`api = "chat"`, the default): the request passes through.

The bridge applies only its own concerns: routing and aliases (the model name the backend knows),
the profile's request fixes (`translator.chat_fixes`), secret scrubbing of error chunks, and the
access log. `RelaySource` relays the stream frame by frame and always ends it with `[DONE]`; a stream
cut before its finish reason ends in an error chunk instead, so a client never takes a cut answer
for a whole one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
from starlette.responses import Response

from server.accesslog import AccessRecord
from server.chat_request import ChatRequest, record_chat_usage
from server.chat_stream import ChunkStream, encode_chunk
from server.config import BridgeConfig, Route
from server.errors import JSONResponse
from server.limits import UpstreamLimitError
from server.scrub import scrub, scrub_value
from server.upstream import UpstreamClient
from translator.chat_fixes import fix_chat_request
from translator.reverse import chat_error
from translator.sse import SSEDecoder, json_object

__all__ = ["RelaySource", "passthrough"]


async def passthrough(asked: ChatRequest, route: Route, client: UpstreamClient, token: str | None,
                      secrets: tuple[str, ...], record: AccessRecord, config: BridgeConfig,
                      shutting_down: Callable[[], bool]) -> Response | ChunkStream:
    body = fix_chat_request(asked.payload, **dict(route.upstream.options))
    body["model"] = route.model
    if not asked.stream:
        completion = await client.complete(body, token)
        record.mark_first_token()
        record_chat_usage(record, completion.get("usage"))
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
                        chunk = json_object(data)
                        if chunk is None:
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
        record_chat_usage(self.record, chunk.get("usage"))
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
        record_chat_usage(self.record, completion.get("usage"))
        if self.include_usage and isinstance(completion.get("usage"), dict):
            frames.append(encode_chunk({**base, "choices": [], "usage": completion["usage"]}))
        return b"".join(frames)
