"""Secret scrubbing: every configured secret replaced by `***` in text that leaves the process.

Backends echo keys in auth errors and headers, so every backend error message, error chunk, passed
header and model entry goes through `scrub` / `scrub_value` before a client or a log sees it. A
secret is found also in another letter case and base64-encoded (standard or URL-safe, with or
without padding, at any byte offset inside a longer encoded value such as Basic auth).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["scrub", "scrub_value"]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every configured secret in `text` (backends echo keys in auth errors and headers),
    also when echoed in another letter case or base64-encoded (standard or URL-safe alphabet, with
    or without padding, and at any byte offset inside a longer encoded value such as Basic auth)."""
    pattern = _secret_pattern(tuple(secrets))
    if pattern is None:
        return text
    return pattern.sub("***", text)


def _base64_forms(secret: bytes) -> set[str]:
    """The base64 text that encodes `secret` wherever it sits in a longer encoded byte string.

    Base64 maps 3 bytes to 4 characters, so the characters a secret turns into depend on its offset
    modulo 3: for each offset, the characters made only of the secret's own bits are fixed."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(secret).decode("ascii")
        forms.update((whole, whole.rstrip("=")))
        for offset in (0, 1, 2):
            encoded = encode(b"\0" * offset + secret).decode("ascii")
            start = (8 * offset + 5) // 6
            end = (8 * (offset + len(secret))) // 6
            inner = encoded[start:end]
            if len(inner) >= 6:  # shorter fragments would match unrelated text
                forms.add(inner)
    return forms


@functools.lru_cache(maxsize=64)
def _secret_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        forms.update(_base64_forms(secret.encode("utf-8")))
    if not forms:
        return None
    # Longest first, so a padded whole encoding is replaced before a fragment of it.
    alternatives = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(f) for f in alternatives), re.IGNORECASE)


def scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    """`scrub` applied to every string inside a JSON value (error objects, model entries)."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub(str(k), secrets): scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, secrets) for v in value]
    return value
