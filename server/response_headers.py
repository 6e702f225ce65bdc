"""`ResponseHeaders`: a backend answer's header fields read the way `httpx.Headers` reads them.

Why apart from the transport: it is pure (no I/O), and `RawResponse` and the tests use it without
a connection; decoding is deferred to first use because the bridge usually reads one or two fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class ResponseHeaders(Mapping[str, str]):
    """A response's headers as `httpx.Headers` reads them (names case-insensitive, repeated fields
    joined with ", ", values decoded as ASCII, else UTF-8, else Latin-1), built on first use."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        mapping = self._map
        if mapping is None:
            encoding = _header_encoding(self._raw)
            mapping = {}
            for name, value in self._raw:
                key, text = name.decode(encoding).lower(), value.decode(encoding)
                mapping[key] = f"{mapping[key]}, {text}" if key in mapping else text
            self._map = mapping
        return mapping

    def __getitem__(self, key: str) -> str:
        return self._mapping()[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        """One field, found without decoding the others when it occurs once and is ASCII (which
        reads the same in every encoding `httpx.Headers` might pick)."""
        if self._map is None and key.isascii():
            target = key.lower().encode("ascii")
            found: bytes | None = None
            for name, value in self._raw:
                if name.lower() == target:
                    if found is not None:
                        found = None  # repeated: joined by the general path
                        break
                    found = value
            else:
                if found is None:
                    return default
            if found is not None and found.isascii():
                return found.decode("ascii")
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._mapping()

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return self._raw


def _header_encoding(raw: list[tuple[bytes, bytes]]) -> str:
    for encoding in ("ascii", "utf-8"):
        try:
            for name, value in raw:
                name.decode(encoding)
                value.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return "iso-8859-1"
