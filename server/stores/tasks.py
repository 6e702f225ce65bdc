"""The store's periodic tasks, run from the app's lifespan: retention (purge) and the heartbeat
that keeps this replica's background jobs its own.

Imports only server/stores/base.py (they speak to any engine through the interface).
"""

from __future__ import annotations

import asyncio
import logging

from server.stores.base import ResponseStore

log = logging.getLogger("responses_bridge")


async def run_retention(store: ResponseStore, older_than_days: float, *, every_seconds: float = 3600.0) -> None:
    """Purge responses older than ``older_than_days`` now and then every ``every_seconds``, for ever
    (run it as a task in the app's lifespan and cancel it on shutdown).

    With several replicas each one purges; that is harmless (a DELETE of rows already gone deletes
    nothing) and keeps retention working when any replica is down."""
    while True:
        try:
            removed = await store.purge(older_than_days)
            if removed:
                log.info("retention: purged %d stored response(s) older than %g day(s)", removed, older_than_days)
        except Exception:
            log.warning("retention: purge failed; trying again later", exc_info=True)
        await asyncio.sleep(every_seconds)


async def run_heartbeat(
    store: ResponseStore, replica_id: str, *, every_seconds: float = 5.0, recover_after: float | None = None
) -> None:
    """Renew this replica's heartbeat every ``every_seconds``, for ever (a lifespan task, cancelled on
    shutdown). Keep ``every_seconds`` well below the ``stale_after`` that ``recover_orphans`` is given
    (default 30 s, i.e. six missed beats) so a busy replica is never taken for a dead one.

    With ``recover_after`` (seconds), each beat also runs ``recover_orphans(replica_id, recover_after)``,
    so the jobs of a replica that dies while this one runs end too, not only at the next start."""
    while True:
        try:
            await store.heartbeat(replica_id)
            if recover_after is not None:
                ended = await store.recover_orphans(replica_id, recover_after)
                if ended:
                    log.warning("recovery: %d background response(s) of a stopped replica failed: %s",
                                len(ended), ", ".join(ended))  # fmt: skip
        except Exception:
            log.warning("heartbeat of replica %s failed; trying again", replica_id, exc_info=True)
        await asyncio.sleep(every_seconds)
