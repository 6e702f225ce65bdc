"""Reading the fixture chat backend's request log from the real-client tests.

A real client (Codex, the Agents SDK) builds its own requests, so a test finds its own traffic in
the backend's log by a random token it put in the prompt, rather than by position: the log is
shared by every test of the session.
"""

from __future__ import annotations

import json
from typing import Any


def chat_requests_with(records: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """The chat request bodies the backend received that mention `token`, oldest first."""
    bodies: list[dict[str, Any]] = []
    for record in records:
        body = record.get("body", record) if isinstance(record, dict) else record
        if isinstance(body, dict) and "messages" in body and token in json.dumps(body):
            bodies.append(body)
    return bodies


def message_text(message: dict[str, Any]) -> str:
    """A chat message's content as text, whether a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
