"""Assertions shared by the test modules: one definition of "an error in OpenAI's shape"."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

ERROR_KEYS = {"message", "type", "param", "code"}


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The exact error envelope `{"error": {message, type, param, code}}`, nothing else; returns the inner error."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "Traceback" not in response.text
    body = orjson.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return error
