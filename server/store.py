"""Where stored responses live: one interface, several engines, chosen by ``open_store(spec)``.

The Responses API is stateful (``store`` defaults to true): clients chain turns with
``previous_response_id``, fetch and delete responses, and poll background jobs. Every engine here passes
the same test suite (tests/server/test_store.py), so the server never needs to know which one it talks to.

Engines:

* ``none``: keeps nothing (``get`` → None, ``conversation`` → None).
* ``memory``: dicts in this process; for tests and throw-away runs.
* ``sqlite:///path.db`` (or a bare path ending in ``.db``): the default, one file, WAL mode, every call on
  one dedicated worker thread so the event loop never blocks (server/stores/sqlite.py).
* ``postgresql://…``: asyncpg with a pool, for many replicas sharing one database
  (server/stores/postgres.py).

JSON goes through orjson everywhere. Records are scoped by ``owner`` (a fingerprint of the caller's API key,
or None when no keys are configured): a record is visible only to the owner it was stored with.

This module is the store's front door: it re-exports the public names of the ``server/stores/``
package (the interface, the errors, the limits, the memory and null engines, the periodic tasks) and
holds ``open_store``, which imports an SQL engine module only when a spec names it. Nothing in
``server/stores/`` imports this module back. docs/store.md lists the package's modules and what
each may import.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from server.stores.base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    DEFAULT_STORE_SPEC,
    MAX_CHAIN_DEPTH,
    SERVER_RESTARTED,
    TERMINAL_STATUSES,
    ConversationNotFound,
    ResponseStore,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)
from server.stores.common import group_option
from server.stores.engine import ItemLookup, StoreEngine
from server.stores.limits import MAX_ID_LENGTH, MAX_JSON_DEPTH, check_storable
from server.stores.memory import MemoryStore
from server.stores.null import NullStore
from server.stores.tasks import run_heartbeat, run_retention

# ------------------------------------------------------------------------------------------ open_store


class StoreSpecError(ValueError):
    """A ``--store`` value that names no engine."""


def _sqlite_params(spec: str, query: str) -> dict:
    options: dict = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            option = group_option(key, value)
        except ValueError as exc:
            raise StoreSpecError(f"--store {spec!r}: {exc}") from exc
        if option is None:
            raise StoreSpecError(f"--store {spec!r}: unknown parameter {key!r} (batch_window_ms, max_batch)")
        options[option[0]] = option[1]
    return options


def open_store(spec: str | None = None) -> ResponseStore:
    """The engine a ``--store`` value names, not yet opened (call ``await store.open()``).

    ``None`` or empty means the default, SQLite in ./responses-bridge.db. SQL engines take
    ``?batch_window_ms=N`` (how long a group commit waits for more writes; default 0: the batch is
    whatever queued during the previous commit) and ``?max_batch=N`` (writes per transaction, default
    256; 1 turns group commit off).
    """
    spec = (spec or DEFAULT_STORE_SPEC).strip()
    lowered = spec.lower()
    if lowered == "none":
        return NullStore()
    if lowered == "memory":
        return MemoryStore()
    if lowered.startswith(("postgresql://", "postgres://")):
        from server.stores.postgres import PostgresStore

        try:
            return PostgresStore(spec)
        except ValueError as exc:
            raise StoreSpecError(str(exc)) from exc
    path, _, query = spec.partition("?")
    if lowered.startswith("sqlite://"):
        from server.stores.sqlite import SQLiteStore

        path = path[len("sqlite://") :]
        # sqlite:///relative.db → "relative.db"; sqlite:////abs/path.db → "/abs/path.db"
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise StoreSpecError(f"--store {spec!r}: no file path after sqlite://")
        return SQLiteStore(path, **_sqlite_params(spec, query))
    if path.lower().endswith((".db", ".sqlite", ".sqlite3")):
        from server.stores.sqlite import SQLiteStore

        return SQLiteStore(path, **_sqlite_params(spec, query))
    raise StoreSpecError(
        f"--store {spec!r} is not understood: use none, memory, sqlite:///path/to/file.db, a path ending "
        "in .db, or postgresql://user@host:port/database"
    )


__all__ = [
    "CANCELLABLE_STATUSES",
    "DEFAULT_STALE_AFTER",
    "DEFAULT_STORE_SPEC",
    "MAX_CHAIN_DEPTH",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "SERVER_RESTARTED",
    "TERMINAL_STATUSES",
    "ConversationNotFound",
    "ItemLookup",
    "MemoryStore",
    "NullStore",
    "ResponseStore",
    "StoreEngine",
    "StoreError",
    "StoreRefused",
    "StoreSpecError",
    "StoreUnavailable",
    "check_storable",
    "open_store",
    "run_heartbeat",
    "run_retention",
]
