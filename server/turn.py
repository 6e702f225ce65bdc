"""One Responses turn from a checked request to the backend call, for every transport.

`POST /v1/responses` (server/responses.py) and a WebSocket `response.create` (server/websocket.py)
do the same steps between reading a request and reading the backend's answer, so they are written
once, here:

1. route the model to an upstream (404 `model_not_found` otherwise);
2. build the conversation: stored history for `previous_response_id` and `item_reference`s, read
   through `history` (the response store, or a WebSocket connection's memory in front of it);
3. the translator options of that upstream (with the bridge's encryption key);
   then compaction (docs/compaction.md): a final `compaction_trigger` item makes the turn a
   compaction (`triggered`; the caller answers it with `server.compact.trigger_answer`), and
   `compaction` items in the input are expanded into the summary they carry, so it reaches the
   backend (a forged or corrupted one is a 400 naming it);
4. what the store could not hold is refused (a 400 naming the field) before the backend is asked;
5. `truncation: "auto"` (server/context_window.py): the input trimmed to the upstream's known
   context window, and the call retried once with the oldest turns dropped when the backend says the
   prompt is too long (a window learned that way is remembered);
6. the chat request, and the call: `open_stream` / `complete`.

What a transport does with the answer (SSE, one JSON body, WebSocket messages, a background job) is
not here. Errors are `ApiError`s, or the translator's `InvalidRequest` / `UpstreamError` for the
caller to map (`server.errors.translator_error`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

import translator
from server.body import ResponsesRequest
from server.config import BridgeConfig, Route
from server.context_window import ContextFit, plan_fit
from server.conversation_turn import echo_conversation
from server.errors import invalid, not_found
from server.history import prepare_input
from server.state import BridgeState
from server.store import StoreRefused, check_storable
from server.upstream import UpstreamClient
from translator import compaction
from translator.options import TranslatorOptions

__all__ = ["PreparedTurn", "prepare_turn", "request_secrets", "routed", "translator_options"]


def translator_options(config: BridgeConfig, client: UpstreamClient) -> dict[str, Any]:
    """The upstream's translator options as keyword arguments (`options=` a `TranslatorOptions`),
    built and checked once per upstream client, not three times per request: the upstream's own
    options, the bridge's encryption key unless the upstream sets its own, and the `[limits]`
    ceilings on output items and output tokens."""
    cached = client.translator_options
    if cached is None:
        options = {"max_output_items": config.limits.response_max_output_items,
                   "max_output_tokens_ceiling": config.limits.upstream_max_output_tokens,
                   **client.upstream.options}  # fmt: skip
        if config.encryption_key is not None:
            options.setdefault("encryption_key", config.encryption_key)
        cached = client.translator_options = TranslatorOptions.from_kwargs(**options)
    return {"options": cached}


def routed(config: BridgeConfig, model: str) -> Route:
    """The upstream serving `model`, or the 404 `model_not_found` every route answers."""
    route = config.route(model)
    if route is None:
        raise not_found(f"The model '{model}' does not exist or is not served by this bridge.", "model",
                        "model_not_found")  # fmt: skip
    return route


def request_secrets(secrets: tuple[str, ...], passthrough: bool, token: str | None) -> tuple[str, ...]:
    """The configured secrets (precomputed per upstream client), plus the caller's own key when it
    is forwarded to the backend."""
    if passthrough and token:
        return (*secrets, token)
    return secrets


@dataclass
class PreparedTurn:
    """A request ready for the backend: where it goes and what it says.

    `request` is the Responses request the translator sees (history prepended); `items` are this
    request's own input items, with ids, to store with the answer; `history_length` counts the items
    in front of them that came from history."""

    asked: ResponsesRequest
    route: Route
    client: UpstreamClient
    options: dict[str, Any]
    secrets: tuple[str, ...]
    token: str | None
    request: dict[str, Any]
    items: list[dict[str, Any]]
    history_length: int
    fit: ContextFit

    @property
    def encryption_key(self) -> str | None:
        """The key that seals `encrypted_content` (reasoning, compaction items) for this upstream."""
        return self.options["options"].encryption_key
    triggered: bool = False

    def chat_request(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The chat request for `request` (this turn's by default), with the upstream's model name."""
        chat_request = translator.responses_to_chat_request(request if request is not None else self.request,
                                                            **self.options)  # fmt: skip
        chat_request["model"] = self.route.model
        return chat_request

    def stream_translator(self) -> Any:
        """The stream's translator; its responses echo the request's `conversation`."""
        return echo_conversation(translator.ChatStreamTranslator(self.request, **self.options), self.request)

    async def open_stream(self) -> httpx.Response:
        """The backend's stream (headers read, status good). After a truncation retry `request` is
        the shortened one, so the translator echoes what the backend saw."""
        try:
            return await self.client.open_stream(self.chat_request(), self.token)
        finally:
            self.request = self.fit.request

    async def complete(self) -> dict[str, Any]:
        """The backend's whole answer (a non-streaming chat completion), with the same retry."""
        chat_request = self.chat_request()
        chat_request["stream"] = False
        chat_request.pop("stream_options", None)
        try:
            return await self.client.complete(chat_request, self.token)
        finally:
            self.request = self.fit.request


def check_storable_input(payload: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """What the store could not hold (NUL in an id, an over-long id, over-deep JSON) is a 400 naming
    the field, the same on every engine, before the backend is asked."""
    try:
        check_storable({**payload, "id": "resp_check"}, items)  # the response id is made later
    except StoreRefused as exc:
        raise invalid(f"Invalid value for '{exc.field}': {exc.reason}.", exc.field, "invalid_value") from None


async def prepare_turn(
    state: BridgeState, asked: ResponsesRequest, *, owner: str | None, token: str | None, history: Any,
    summarising: bool = False, route: Route | None = None,
) -> PreparedTurn:
    """Steps 1-3 of the module docstring. `history` is what `prepare_input` reads history through.
    `summarising`: the turn is `POST /v1/responses/compact`, which renders compaction items into its
    transcript itself, so they are left as they are (and a trigger is the caller's to drop). `route`:
    the model's route when the caller looked it up already (else it is looked up here)."""
    config = state.config
    if route is None:
        route = routed(config, asked.model)
    client = state.clients[route.upstream.name]
    secrets = request_secrets(client.secrets, route.upstream.passthrough, token)
    request, items = await prepare_input(history, asked.payload, owner)
    if asked.store and state.keeps_responses:  # refused now, not after the model ran
        check_storable_input(asked.payload, items)
    history_length = 0
    if request is not asked.payload and isinstance(request.get("input"), list):
        history_length = max(len(request["input"]) - len(items), 0)
    options = translator_options(config, client)
    inputs, triggered = request.get("input"), False
    if not summarising:
        inputs, triggered = compaction.split_compaction_trigger(inputs)
    if triggered:  # the trigger is an instruction to the bridge, not part of the conversation
        request = {**request, "input": inputs}
        items = [item for item in items if not (isinstance(item, dict) and item.get("type") == compaction.TRIGGER_TYPE)]
    elif not summarising and compaction.has_compaction_items(inputs):
        request = {**request, "input": compaction.expand_compaction_items(
            inputs, key=options["options"].encryption_key, first_client_index=history_length)}  # fmt: skip
    fit = plan_fit(state, route, request, options)  # truncation: "auto"; an overflow gets OpenAI's code
    return PreparedTurn(asked=asked, route=route, client=fit.client(client), options=options, secrets=secrets,
                        token=token, request=fit.request, items=items, history_length=history_length, fit=fit,
                        triggered=triggered)  # fmt: skip
