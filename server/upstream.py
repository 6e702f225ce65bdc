"""Talking to a chat backend: one keep-alive pool per upstream, errors mapped to HTTP.

Chat requests to an `http://` upstream are written straight to the pool (`FastTransport.send_raw`,
a request head encoded once per upstream, the same bytes httpx would send); `https://` upstreams
(TLS, HTTP/2, proxies), URLs carrying credentials and `GET /models` go through the upstream's
`httpx.AsyncClient`, whose transport is the same pool for plain HTTP.

Every failure before a stream starts becomes an `ApiError` carrying the status the client should
see (docs/wire.md §1.5e: a pre-stream failure is a plain HTTP error, not a 200 stream):
the backend's 4xx keeps its status and message, 429 keeps its Retry-After, refused/reset/5xx become
502, timeouts 504. Messages, and every header passed through to the client, are scrubbed of
configured secrets before they leave the process (server/scrub.py).
An answer over a `[limits]` ceiling is a 502 whose message names the setting.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from server.config import BridgeConfig, Upstream
from server.errors import ApiError
from server.limits import UpstreamLimitError, too_large
from server.scrub import scrub, scrub_value
from server.transport import FastTransport, RawResponse
from translator.errors import UpstreamError, classify_backend_error
from translator.options import TranslatorOptions

__all__ = ["UpstreamClient"]

_PASS_HEADERS = ("retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                 "x-ratelimit-reset-tokens")  # fmt: skip
_MAX_ERROR_BODY = 64 * 1024


#: Sends on pooled connections that turn out stale before the final attempt (see `_send`).
_STALE_RETRIES = 3

#: Stands for the caller's key while the request head of a passthrough upstream is pre-built.
_TOKEN_SLOT = "responses-bridge-caller-token-slot"

#: What both request paths answer with: an `httpx.Response` or a `RawResponse` (the same reads).
UpstreamResponse = httpx.Response | RawResponse


class _ChatHead:
    """The head of every `POST .../chat/completions` to one `http://` upstream, encoded once.

    It is taken from the request httpx itself would build (same header names, values and order;
    only the length, and for a passthrough upstream the caller's key, differ per request), so the
    hot path skips httpx's per-request URL parsing, header merging and model objects."""

    __slots__ = ("after_token", "before_token", "origin")

    def __init__(self, client: httpx.AsyncClient, url: str, passthrough: bool) -> None:
        extra = {"authorization": f"Bearer {_TOKEN_SLOT}"} if passthrough else None
        request = client.build_request("POST", url, content=b"x", headers=_json_headers(extra))
        if request.url.userinfo:
            # httpx turns credentials in the URL into Basic auth when it sends: leave those to httpx
            raise ValueError("credentials in the URL")
        head = FastTransport._head(request, b"x")
        tail = b"Content-Length: 1\r\n\r\n"
        if not head.endswith(tail):
            raise ValueError("unexpected request head")
        prefix = head[: -len(tail)] + b"Content-Length: "
        slot = _TOKEN_SLOT.encode()
        if passthrough:
            if prefix.count(slot) != 1:
                raise ValueError("unexpected request head")
            self.before_token, _, self.after_token = prefix.partition(slot)
        else:
            self.before_token, self.after_token = prefix, b""
        self.origin = (request.url.host, request.url.port or 80)

    def encode(self, body: bytes, token: str | None) -> bytes:
        length = str(len(body)).encode()
        if token is None:
            return b"".join((self.before_token, length, b"\r\n\r\n", body))
        # ASCII as httpx encodes a header value (a key it cannot encode fails the same way there)
        return b"".join((self.before_token, token.encode("ascii"), self.after_token, length, b"\r\n\r\n", body))


class UpstreamClient:
    """The shared HTTP/1.1 keep-alive pool to one backend, sized for many concurrent streams."""

    def __init__(self, upstream: Upstream, config: BridgeConfig, base_url: str | None = None) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.base_url = (base_url or upstream.base_url).rstrip("/")
        self.chat_url = self.base_url + "/chat/completions"
        self.models_url = self.base_url + "/models"
        self.secrets = config.secrets
        self.limits = config.limits
        timeouts = config.timeouts
        self.idle_timeout = timeouts.idle
        self.timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.first_byte, write=timeouts.connect, pool=timeouts.connect
        )
        headers = {"accept-encoding": "identity", "user-agent": "responses-bridge"}
        headers.update({k.lower(): v for k, v in upstream.headers.items()})
        if upstream.api_key and not upstream.passthrough:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(config.max_connections, 256),
            keepalive_expiry=30.0,
        )
        self.transport = FastTransport(limits=limits, ceilings=config.limits)
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=self.timeout,
            # httpcore costs more CPU than the translation; the ceilings bound what a backend can cost
            transport=self.transport,
            follow_redirects=False,
            trust_env=False,
        )
        self._timeouts: dict[str, float | None] = self.timeout.as_dict()
        #: Chat requests to an `http://` upstream go straight to the pool (`FastTransport.send_raw`);
        #: others (`https://`: TLS, HTTP/2, proxies) through httpx.
        self._chat_head: _ChatHead | None = None
        if self.chat_url.startswith("http://"):
            with contextlib.suppress(ValueError, httpx.InvalidURL):
                self._chat_head = _ChatHead(self.client, self.chat_url, upstream.passthrough)
        self._models_cache: tuple[float, list[dict[str, Any]]] | None = None
        #: The translator options for this upstream, set on first use by `server.responses`.
        self.translator_options: TranslatorOptions | None = None

    async def aclose(self) -> None:
        await self.client.aclose()

    def _auth(self, caller_token: str | None) -> dict[str, str] | None:
        if self.upstream.passthrough:
            if not caller_token:
                raise ApiError(
                    401,
                    "This upstream forwards the caller's API key, but the request carried none.",
                    code="missing_api_key",
                )
            return {"authorization": f"Bearer {caller_token}"}
        return None

    # ---------------------------------------------------------------------------------- requests

    async def _post_chat(self, chat_request: dict[str, Any], caller_token: str | None) -> UpstreamResponse:
        """POST a chat request; the answer once its headers are in (its body not yet read)."""
        content = orjson.dumps(chat_request)
        auth = self._auth(caller_token)
        head = self._chat_head
        if head is None:
            request = self.client.build_request("POST", self.chat_url, content=content, headers=_json_headers(auth))
            return await self._send(lambda: self.client.send(request, stream=True))
        data = head.encode(content, caller_token if auth is not None else None)
        return await self._send(lambda: self.transport.send_raw(head.origin, data, dict(self._timeouts)))

    async def open_stream(self, chat_request: dict[str, Any], caller_token: str | None) -> UpstreamResponse:
        """POST a streaming chat request and return the response once its status is known and good.

        The caller owns the returned response and must `aclose()` it. After the headers, the read
        timeout is switched from first-byte to idle (the transport reads it per body read)."""
        response = await self._post_chat(chat_request, caller_token)
        if response.status_code >= 400:
            try:
                await self._raise_for_status(response)
            finally:
                await response.aclose()
        if isinstance(response, RawResponse):
            response.timeouts["read"] = self.idle_timeout
        else:
            timeout = response.request.extensions.get("timeout")
            if isinstance(timeout, dict):
                timeout["read"] = self.idle_timeout
        return response

    async def complete(self, chat_request: dict[str, Any], caller_token: str | None) -> dict[str, Any]:
        """POST a non-streaming chat request and return the parsed chat completion."""
        response = await self._post_chat(chat_request, caller_token)
        try:
            if response.status_code >= 400:
                await self._raise_for_status(response)
        except BaseException:
            await response.aclose()
            raise
        completion = await self.answer_json(response)
        if not isinstance(completion, dict):
            raise ApiError(502, f"Upstream {self.name} returned JSON that is not an object.", code="upstream_error")
        if completion.get("error") and not completion.get("choices"):
            # OpenRouter-style: HTTP 200 whose body is an error object.
            raise self._error_from_body(502, completion, {})
        return completion

    async def post(self, path: str, body: dict[str, Any], caller_token: str | None, *, stream: bool) -> httpx.Response:
        """POST `body` to `{base_url}{path}` (a native Responses backend's `/responses`) through this
        upstream's pool, retries and error mapping; the answer once its status is known and good
        (a backend 4xx keeps its status and message, 5xx/refused become 502, timeouts 504). With
        `stream`, the read timeout switches to idle after the headers. The caller closes it."""
        headers = {"content-type": "application/json", "accept": "text/event-stream, application/json"}
        headers.update(self._auth(caller_token) or {})
        request = self.client.build_request("POST", self.base_url + path, content=orjson.dumps(body), headers=headers)
        response = await self._send(lambda: self.client.send(request, stream=True))
        if response.status_code >= 400:
            try:
                await self._raise_for_status(response)
            finally:
                await response.aclose()
        if stream:
            timeout = response.request.extensions.get("timeout")
            if isinstance(timeout, dict):
                timeout["read"] = self.idle_timeout
        return response  # type: ignore[return-value]

    async def answer_json(self, response: UpstreamResponse) -> Any:
        """A non-streamed answer parsed (chat completion or Response), the response closed; every way
        reading it fails is an `ApiError` naming this upstream (502; 504 for a timeout)."""
        try:
            body = await self._read_json_body(response)
        except UpstreamLimitError as exc:  # the transport's own ceilings say "the backend"
            raise ApiError(502, str(exc).replace("the backend", self.name, 1), code=exc.code) from None
        except httpx.TimeoutException:
            raise ApiError(504, f"Upstream {self.name} timed out sending its answer.", code="upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise ApiError(502, f"Upstream {self.name} failed mid-answer: {type(exc).__name__}.", code="upstream_error") from None
        finally:
            await response.aclose()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(502, f"Upstream {self.name} returned a body that is not JSON.", code="upstream_error") from None

    async def read_json(self, response: UpstreamResponse) -> bytes:
        """The bytes of a non-streamed answer, within `upstream_max_json_bytes` (see `_read_json_body`)."""
        return await self._read_json_body(response)

    async def _read_json_body(self, response: UpstreamResponse) -> bytes:
        """A non-streamed answer, refused as soon as it is known to exceed `upstream_max_json_bytes`
        (by its Content-Length, or while it arrives): parsing 300 MB of JSON costs gigabytes."""
        limit = self.limits.upstream_max_json_bytes
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large("a JSON answer", "upstream_max_json_bytes", limit, self.name)
        parts: list[bytes] = []
        size = 0
        async for part in response.aiter_raw():  # identity only: the transport refuses encodings
            size += len(part)
            if size > limit:
                raise too_large("a JSON answer", "upstream_max_json_bytes", limit, self.name)
            parts.append(part)
        return b"".join(parts)

    async def list_models(self, caller_token: str | None, ttl: float = 60.0) -> list[dict[str, Any]]:
        """The backend's `GET /models` list (cached briefly; an unreachable backend lists nothing)."""
        now = time.monotonic()
        if self._models_cache and now - self._models_cache[0] < ttl and not self.upstream.passthrough:
            return self._models_cache[1]
        try:
            response = await self.client.get(self.models_url, headers=self._auth(caller_token), timeout=10.0)
            data = response.json().get("data", []) if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            data = []
        models = [scrub_value(m, self.secrets) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if not self.upstream.passthrough:
            self._models_cache = (now, models)
        return models

    async def _send(self, send: Callable[[], Awaitable[UpstreamResponse]]) -> UpstreamResponse:
        try:
            for _attempt in range(_STALE_RETRIES):
                try:
                    return await send()
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    # A pooled keep-alive connection the backend had already closed (uvicorn, hence vLLM
                    # and most Python servers, drops idle ones after 5 s) fails before any response byte.
                    # Like Go's net/http and urllib3, send again: nothing was answered, and a chat
                    # completion has no side effect a second attempt could duplicate. Several pooled
                    # connections can be stale at once, hence a few attempts before the last one.
                    continue
            return await send()
        except httpx.ConnectTimeout:
            raise ApiError(504, f"Timed out connecting to upstream {self.name}.", code="upstream_timeout") from None
        except httpx.PoolTimeout:
            raise ApiError(503, f"Too many concurrent requests to upstream {self.name}.", code="upstream_busy") from None
        except httpx.TimeoutException:
            raise ApiError(504, f"Upstream {self.name} did not answer in time.", code="upstream_timeout") from None
        except httpx.ConnectError:
            raise ApiError(502, f"Could not connect to upstream {self.name}.", code="upstream_unavailable") from None
        except UpstreamLimitError as exc:
            raise ApiError(502, str(exc).replace("the backend", self.name, 1), code=exc.code) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                502, f"Upstream {self.name} closed the connection ({type(exc).__name__}).", code="upstream_error"
            ) from None

    async def _raise_for_status(self, response: UpstreamResponse) -> None:
        parts: list[bytes] = []
        size = 0
        try:
            async for part in response.aiter_raw():
                parts.append(part)
                size += len(part)
                if size > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        body = b"".join(parts)[:_MAX_ERROR_BODY]
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        raise self._error_from_body(response.status_code, parsed, response.headers, raw=body)

    def _error_from_body(
        self, status: int, parsed: Any, headers: Mapping[str, str], raw: bytes = b""
    ) -> ApiError:
        """The client's error for a backend error answer. The body's message, code and param are
        read by `translator.UpstreamError.from_body` (one set of rules for what may be relayed);
        this adds what only the server knows: the status to answer with, headers to pass on, the
        raw text of a non-JSON body, and which URL answered."""
        parsed_error = UpstreamError.from_body(parsed, status=status)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        message: str | None = parsed_error.message if err else None
        if not message and isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
            message = parsed["detail"]  # FastAPI-style backends
        if not message:
            snippet = raw[:200].decode("utf-8", "replace").strip() if raw and parsed is None else ""
            message = f"Upstream {self.name} returned HTTP {status}" + (f": {snippet}" if snippet and not snippet.startswith("<") else ".")
        raw_type = err.get("type") if isinstance(err, dict) else None
        type_ = raw_type if isinstance(raw_type, str) and _IDENTIFIER.fullmatch(raw_type) else None
        # from_body's code defaults to server_error, which is not what a backend's 4xx was about.
        code = parsed_error.code if isinstance(err, dict) and err.get("code") == parsed_error.code else None
        param = parsed_error.param
        if status == 404 and not isinstance(err, dict):
            # No error object: a route the backend does not have, most often a base URL without /v1.
            hint = "" if self.base_url.endswith("/v1") else "; is the base URL missing /v1?"
            message = f"Backend at {self.chat_url} answered 404: {message}{hint}"
        message = scrub(message, self.secrets)
        type_, param, code = (scrub(v, self.secrets) if isinstance(v, str) else v for v in (type_, param, code))
        passed = {k: scrub(headers[k], self.secrets) for k in _PASS_HEADERS if k in headers}
        if classify_backend_error(err if isinstance(err, dict) else message) == "context_length_exceeded":
            # Every backend words "prompt too long" its own way; clients act on OpenAI's code (they compact).
            return ApiError(400, message, type="invalid_request_error", code="context_length_exceeded", headers=passed)
        if 400 <= status < 500 and status != 408:
            return ApiError(status, message, type=type_, param=param, code=code, headers=passed)
        if status in (408, 504):
            return ApiError(504, f"Upstream {self.name} timed out: {message}", code="upstream_timeout")
        return ApiError(502, f"Upstream {self.name} failed with HTTP {status}: {message}", code="upstream_error")


_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _json_headers(extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "text/event-stream, application/json"}
    if extra:
        headers.update(extra)
    return headers

