"""The translator is sans-IO: its tests must run with no network at all.

Every socket operation that could reach a peer (connect, bind, DNS) raises here, so a translator
test that opens a socket fails instead of passing by luck; `pytest tests/translator` runs alone,
in seconds, on a machine with no network.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest


class SocketUsed(AssertionError):
    """A translator test touched the network."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise SocketUsed("translator tests must not open sockets (the translator is sans-IO)")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name, _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    yield
