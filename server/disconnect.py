"""Noticing that an HTTP client hung up while the bridge waits on the backend.

Every route that waits on a backend before it answers (`/v1/responses`, `/v1/chat/completions`,
`/v1/responses/compact`) uses this, so a backend never generates for a client that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive

__all__ = ["ClientGone", "cancel_on_disconnect"]


class ClientGone(Exception):
    """The client hung up while the bridge waited on the backend."""


@contextlib.asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Cancel the enclosed awaits (the backend request) the moment the client disconnects, so a
    backend does not generate for nobody while the bridge waits for its headers or whole answer."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
