"""`truncation: "auto"` in the server: fit what is sent upstream into the backend's context window.

The trimming itself is `translator.truncation` (pure); this module chooses the budget and retries:

- the budget comes from the upstream's configured `context_window` (tokens), or from a window
  learned from an earlier `context_length_exceeded` answer of the same backend and model (kept in
  memory per process), whichever is smaller;
- a request over budget is trimmed before it goes out; one that the backend still refuses with a
  context overflow *before its stream starts* is trimmed harder and sent once more (the new budget
  comes from the numbers in the backend's message when it gives them, else half of what was sent);
- only what is sent is trimmed: the stored input, the conversation and the Response's echo of
  `truncation: "auto"` are untouched.

With `truncation: "disabled"` (the default) nothing is trimmed or retried and the backend's error
stands, with OpenAI's code: any known wording of a context overflow answered before the stream is a
400 `context_length_exceeded` (the code clients such as Codex act on), whatever the backend called it.

Hook (server/responses.py)::

    fit = plan_fit(state, route, translated_request, options)
    translated_request, client = fit.request, fit.client(client)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import translator
from server.errors import ApiError
from translator.errors import classify_backend_error
from translator.truncation import estimate_tokens, input_budget, truncate_items

__all__ = ["CONTEXT_LENGTH_EXCEEDED", "ContextFit", "FittingClient", "LearnedWindows", "is_overflow", "plan_fit"]

log = logging.getLogger("responses_bridge")

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
#: Share of the backend's stated limit aimed at on the retry: the estimate is rough.
RETRY_MARGIN = 0.9
#: Without numbers in the backend's message, the retry sends at most this share of what failed.
BLIND_SHRINK = 0.5

# "maximum context length is 4096 tokens" (OpenAI, vLLM, DeepSeek), "context length of 4096"
_LIMIT = re.compile(r"(?:maximum context length|context length|context size|n_ctx)\D{0,20}?(\d{2,9})", re.I)
# "your messages resulted in 5000 tokens", "you requested 5000 tokens", "(5000 in the messages"
_ACTUAL = re.compile(r"(?:resulted in|requested|prompt (?:has|contains)|n_prompt_tokens\D{0,5})\s*(\d{2,9})", re.I)


class LearnedWindows:
    """Input budgets (estimated tokens) that fitted after a backend said its context overflowed,
    per (upstream name, backend model). Per process: a restart learns again on the first overflow."""

    def __init__(self) -> None:
        self._budgets: dict[tuple[str, str], int] = {}

    def get(self, key: tuple[str, str]) -> int | None:
        return self._budgets.get(key)

    def learn(self, key: tuple[str, str], budget: int) -> None:
        old = self._budgets.get(key)
        self._budgets[key] = budget if old is None else min(old, budget)


def learned_windows(state: Any) -> LearnedWindows:
    windows = getattr(state, "learned_windows", None)
    if not isinstance(windows, LearnedWindows):
        windows = LearnedWindows()
        state.learned_windows = windows
    return windows


def is_overflow(exc: BaseException) -> bool:
    """Whether an upstream error means "the prompt does not fit the context window"."""
    if not isinstance(exc, ApiError) or not 400 <= exc.status < 500:
        return False
    if exc.code == CONTEXT_LENGTH_EXCEEDED:
        return True
    return classify_backend_error({"message": exc.message, "type": exc.type, "code": exc.code}) is not None


def _items_estimate(items: list[Any]) -> int:
    return sum(estimate_tokens(item) for item in items)


@dataclass
class ContextFit:
    """One request's fitting: `request` is what to translate and send (input trimmed to the budget)."""

    request: dict[str, Any]
    options: dict[str, Any]
    key: tuple[str, str]
    windows: LearnedWindows
    budget: int | None
    auto: bool = True  # False: `truncation: "disabled"`, only the overflow's code is set
    dropped: int = 0
    retried: bool = field(default=False)

    def client(self, inner: Any) -> FittingClient:
        return FittingClient(inner, self)

    def shrink(self, error: ApiError) -> dict[str, Any] | None:
        """The request trimmed harder after `error` (an overflow), or None when nothing can go."""
        items = self.request.get("input")
        if not isinstance(items, list) or not items:
            return None
        sent = _items_estimate(items)
        limit, actual = _numbers(error.message)
        if limit and actual and actual > limit:
            budget = int(sent * limit / actual * RETRY_MARGIN)
        else:
            budget = int(sent * BLIND_SHRINK)
        trimmed = truncate_items(items, min(budget, sent - 1))
        if trimmed.dropped == 0:
            return None
        self.budget, self.dropped = budget, self.dropped + trimmed.dropped
        self.request = {**self.request, "input": trimmed.items}
        return self.request

    def remember(self) -> None:
        """The retry fitted: later requests to this backend and model start from that budget."""
        if self.budget is not None:
            self.windows.learn(self.key, self.budget)


def plan_fit(state: Any, route: Any, request: dict[str, Any], options: dict[str, Any]) -> ContextFit:
    """With `truncation: "auto"`, the request's input trimmed to the known budget (configured window,
    learned window) and the means to retry once on an overflow; otherwise a fit that changes nothing
    and only gives an overflow error OpenAI's code."""
    windows = learned_windows(state)
    key = (route.upstream.name, route.model)
    if request.get("truncation") != "auto":
        return ContextFit(request=request, options=options, key=key, windows=windows, budget=None, auto=False)
    budgets = []
    window = getattr(route.upstream, "context_window", None)
    if isinstance(window, int) and window > 0:
        budgets.append(input_budget(window, request))
    learned = windows.get(key)
    if learned is not None:
        budgets.append(learned)
    fit = ContextFit(request=request, options=options, key=key, windows=windows, budget=min(budgets, default=None))
    items = request.get("input")
    if fit.budget is not None and isinstance(items, list):
        trimmed = truncate_items(items, fit.budget)
        if trimmed.dropped:
            fit.dropped = trimmed.dropped
            fit.request = {**request, "input": trimmed.items}
            log.info("truncation auto: dropped %d of %d input items to fit %s/%s (budget %d estimated tokens)",
                     trimmed.dropped, len(items), key[0], key[1], fit.budget)  # fmt: skip
    return fit


def _numbers(message: str) -> tuple[int | None, int | None]:
    limit = _LIMIT.search(message or "")
    actual = _ACTUAL.search(message or "")
    return (int(limit.group(1)) if limit else None, int(actual.group(1)) if actual else None)


class FittingClient:
    """An upstream client that, on a context overflow answered before any stream, trims the request
    harder (`ContextFit.shrink`) and sends it once more. Everything else is the inner client's."""

    def __init__(self, inner: Any, fit: ContextFit) -> None:
        self.inner = inner
        self.fit = fit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open_stream(self, chat_request: dict[str, Any], caller_token: str | None) -> Any:
        return await self._send(self.inner.open_stream, chat_request, caller_token)

    async def complete(self, chat_request: dict[str, Any], caller_token: str | None) -> Any:
        return await self._send(self.inner.complete, chat_request, caller_token)

    async def _send(
        self, call: Callable[[dict[str, Any], str | None], Awaitable[Any]], chat_request: dict[str, Any],
        token: str | None,
    ) -> Any:  # fmt: skip
        try:
            return await call(chat_request, token)
        except ApiError as exc:
            if not is_overflow(exc) or self.fit.retried or not self.fit.auto:
                raise _as_overflow(exc) from None
            self.fit.retried = True
            smaller = self.fit.shrink(exc)
            if smaller is None:
                raise _as_overflow(exc) from None
            try:
                retry_request = _rebuild(chat_request, smaller, self.fit.options)
            except translator.InvalidRequest:
                raise _as_overflow(exc) from None
            log.info("truncation auto: %s/%s refused the prompt (%s); retrying once with %d item(s) dropped",
                     self.fit.key[0], self.fit.key[1], exc.message[:120], self.fit.dropped)  # fmt: skip
        try:
            answer = await call(retry_request, token)
        except ApiError as exc:
            raise _as_overflow(exc) from None
        self.fit.remember()
        return answer


def _as_overflow(exc: ApiError) -> ApiError:
    """An overflow error carries OpenAI's code and status, whatever the backend called it."""
    if is_overflow(exc):
        exc.code, exc.status, exc.type = CONTEXT_LENGTH_EXCEEDED, 400, "invalid_request_error"
    return exc


def _rebuild(sent: dict[str, Any], request: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The chat request for the trimmed `request`, with what the route set on the first one (the
    backend's model name, stream on or off)."""
    chat = translator.responses_to_chat_request(request, **options)
    chat["model"] = sent.get("model", chat.get("model"))
    chat["stream"] = sent.get("stream", chat.get("stream"))
    if "stream_options" not in sent:
        chat.pop("stream_options", None)
    return chat
