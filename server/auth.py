"""API-key checks: `Authorization: Bearer KEY` or `x-api-key: KEY`, compared in constant time.

The owner of a stored response is a fingerprint of the key that created it (a hash, never the key),
so a key sees only its own responses and nothing secret reaches the store or the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence

__all__ = ["caller_token", "check_key", "fingerprint", "is_loopback"]


def caller_token(headers: dict[bytes, bytes] | Sequence[tuple[bytes, bytes]]) -> str | None:
    """The key the caller presented (bearer first, then x-api-key), or None."""
    items = headers.items() if isinstance(headers, dict) else headers
    api_key = None
    for name, value in items:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lowered == b"x-api-key" and value:
            api_key = value.decode("latin-1").strip() or None
    return api_key


def check_key(presented: str | None, keys: Sequence[str]) -> bool:
    """True when `presented` equals one of `keys`; every key is compared so timing reveals nothing."""
    if presented is None:
        return False
    candidate = presented.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(candidate, key.encode())
    return ok


def fingerprint(key: str | None) -> str | None:
    """A stable, non-reversible owner id for a key (None when the bridge is open)."""
    if key is None:
        return None
    return "key_" + hashlib.sha256(b"responses-bridge:" + key.encode()).hexdigest()[:32]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the bridge reachable only from this machine."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
