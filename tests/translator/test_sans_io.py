"""The guard in tests/translator/conftest.py works, and the translator needs nothing it refuses."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_opening_a_socket_in_a_translator_test_fails() -> None:
    with pytest.raises(AssertionError, match="sans-IO"):
        socket.create_connection(("127.0.0.1", 9))
    sock = socket.socket()
    try:
        with pytest.raises(AssertionError, match="sans-IO"):
            sock.bind(("127.0.0.1", 0))
    finally:
        sock.close()


def test_importing_the_translator_loads_no_network_or_server_module() -> None:
    code = ("import sys, translator\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('server', 'httpx', 'asyncio', 'starlette',"
            " 'uvicorn', 'conformance', 'fixtures'))\n"
            "print(' '.join(bad))\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
