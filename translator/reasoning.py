"""Carrying what a backend needs back through a stateless client, inside ``encrypted_content``.

Codex runs with ``store: false`` and replays the previous turn's output items as the next turn's
input. The bridge keeps no state for it, so whatever the backend must see again travels inside the
reasoning item's ``encrypted_content``:

* the reasoning text itself (DeepSeek's thinking mode rejects a tool-call turn whose assistant
  message lacks its ``reasoning_content``; vLLM/Ollama take ``reasoning``);
* OpenRouter's ``reasoning_details`` (signed/encrypted blocks that must come back verbatim);
* Gemini's ``extra_content.google.thought_signature`` per tool call (Gemini 3 rejects a replayed
  tool call without it).

Without a secret the token is just base64url JSON (opaque to clients, readable by anyone who
tries). With ``encryption_key`` it is a Fernet token (AES-CBC + HMAC from the ``cryptography``
package, imported lazily so ``import translator`` needs only orjson): a client can neither read nor
forge it. Tokens we cannot read (another key, OpenAI's own encrypted reasoning) unpack to None and
are ignored rather than failing the request.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import orjson

from .errors import UpstreamError

__all__ = ["pack_reasoning", "unpack_reasoning"]

_PLAIN = "rb1."
_SEALED = "rb1f."
_HKDF_INFO = b"responses-bridge encrypted_content v1"


@functools.lru_cache(maxsize=8)
def _fernet(secret: str) -> Any:
    """Derive a Fernet key from any secret string with HKDF-SHA256 (no home-made crypto)."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def pack_reasoning(data: dict[str, Any], key: str | None = None) -> str:
    """Encode replay data (``{"text", "details", "tool_extras"}``) into an ``encrypted_content`` string.

    Raises `UpstreamError` when the data cannot be encoded (a backend's ``reasoning_details`` nested
    past orjson's depth limit): the backend sent it, so the backend is at fault."""
    try:
        raw = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise UpstreamError(f"The backend sent reasoning that cannot be carried back ({exc}).",
                            code="upstream_malformed_chunk") from None  # fmt: skip
    if key:
        return _SEALED + _fernet(key).encrypt(raw).decode("ascii")
    return _PLAIN + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unpack_reasoning(token: Any, key: str | None = None) -> dict[str, Any] | None:
    """Decode a token made by `pack_reasoning`; None for anything else (never raises).

    With a key configured, unsealed tokens are refused: otherwise a client could forge them.
    """
    if not isinstance(token, str):
        return None
    try:
        if token.startswith(_SEALED):
            if not key:
                return None
            from cryptography.fernet import InvalidToken

            try:
                raw = _fernet(key).decrypt(token[len(_SEALED) :].encode("ascii"))
            except InvalidToken:
                return None
        elif token.startswith(_PLAIN):
            if key:
                return None
            body = token[len(_PLAIN) :]
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        else:
            return None
        data = orjson.loads(raw)
    except (ValueError, binascii.Error, UnicodeEncodeError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
