"""The PostgreSQL engine's tables, its shared SQL and its spec (``postgresql://…?schema=…``).

Imports only server/stores/common.py (for the group-commit settings every SQL engine reads).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server.stores.common import group_option

#: Advisory-lock key shared by every replica (any fixed 64-bit number; this one spells "rbstore").
SCHEMA_LOCK_KEY = 0x7262_7374_6F72_65

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

TABLES = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    previous_response_id TEXT,
    status TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    response JSON NOT NULL,
    input_items JSON NOT NULL,
    owner_replica TEXT
);
ALTER TABLE responses ADD COLUMN IF NOT EXISTS owner_replica TEXT;
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
CREATE INDEX IF NOT EXISTS responses_running ON responses (status) WHERE status IN ('queued', 'in_progress');
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    item JSON NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX IF NOT EXISTS items_item_id ON items (item_id);
CREATE TABLE IF NOT EXISTS events (
    response_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    event JSON NOT NULL,
    PRIMARY KEY (response_id, sequence_number)
);
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    metadata JSON NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT,
    item JSON NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE INDEX IF NOT EXISTS conversation_items_item_id ON conversation_items (conversation_id, item_id);
CREATE INDEX IF NOT EXISTS conversation_items_response ON conversation_items (conversation_id, response_id);
"""

#: Database time in epoch seconds: heartbeats are compared on one clock, the server's.
NOW = "extract(epoch from clock_timestamp())"

UPSERT_RESPONSE = (
    "INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, input_items, "
    "owner_replica) VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8) ON CONFLICT (id) DO UPDATE "
    "SET owner = EXCLUDED.owner, created_at = EXCLUDED.created_at, "
    "previous_response_id = EXCLUDED.previous_response_id, status = EXCLUDED.status, "
    "response = EXCLUDED.response, input_items = EXCLUDED.input_items, "
    "owner_replica = COALESCE(EXCLUDED.owner_replica, responses.owner_replica)"
)
INSERT_ITEM = "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6::json)"
INSERT_CONVERSATION_ITEM = "INSERT INTO conversation_items VALUES ($1, $2, $3, $4, $5::json)"

#: Writes per group unless the spec says (bounds one transaction's size and latency).
DEFAULT_MAX_BATCH = 256

CHAIN_SQL = """
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1
    FROM chain AS c JOIN responses AS r ON r.id = c.prev AND r.owner IS NOT DISTINCT FROM $2
    WHERE c.depth < $3
)
SELECT c.prev, r.input_items, r.response FROM chain AS c JOIN responses AS r ON r.id = c.id
ORDER BY c.depth DESC
"""

def split_spec(spec: str) -> tuple[str, str | None]:
    """(DSN for asyncpg, schema name or None): ``schema`` is ours, asyncpg would take it for a server
    setting."""
    dsn, schema, _ = parse_spec(spec)
    return dsn, schema


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """(DSN for asyncpg, schema or None, our options): ``schema``, ``batch_window_ms`` and
    ``max_batch`` are ours and taken out; every other parameter is left for asyncpg."""
    parts = urlsplit(spec)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    options: dict[str, Any] = {}
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            try:
                option = group_option(key, value)
            except ValueError as exc:
                raise ValueError(f"--store: {exc}") from exc
            if option is None:
                kept.append((key, value))
            else:
                options[option[0]] = option[1]
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"--store: schema {schema!r} must be a plain SQL identifier")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return dsn, schema, options
