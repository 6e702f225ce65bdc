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

INSERT_ITEM = "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6::json)"
#: A group's responses and their items as ONE statement (one round trip, one plan, no BEGIN/COMMIT:
#: outside a transaction a statement commits alone, atomically), from one array per column
#: (`put_group_args`). The ids are distinct (the group keeps the later put of an id). Each response
#: is upserted; its items become exactly the new set: the new ones upserted by (response, position),
#: the old ones at other positions deleted. The two item parts touch disjoint rows, as they must:
#: every part of one statement sees the same snapshot. The items' foreign key is checked at the end
#: of the statement, after the responses are in.
PUT_GROUP = """
WITH kept AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[])
        AS k(id, owner, created_at, previous_response_id, status, response, input_items, owner_replica)
), upserted AS (
    INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, input_items, owner_replica)
    SELECT id, owner, created_at, previous_response_id, status, response::json, input_items::json, owner_replica
    FROM kept
    ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, created_at = EXCLUDED.created_at,
        previous_response_id = EXCLUDED.previous_response_id, status = EXCLUDED.status,
        response = EXCLUDED.response, input_items = EXCLUDED.input_items,
        owner_replica = COALESCE(EXCLUDED.owner_replica, responses.owner_replica)
), new_items AS (
    SELECT * FROM unnest($9::text[], $10::text[], $11::int[], $12::text[], $13::float8[], $14::text[])
        AS i(item_id, response_id, position, owner, created_at, item)
), replaced AS (
    DELETE FROM items AS old
    WHERE old.response_id = ANY($1::text[])  -- the primary key's index, not a join the planner may scan for
      AND NOT EXISTS (SELECT 1 FROM new_items AS n WHERE n.response_id = old.response_id AND n.position = old.position)
)
INSERT INTO items (item_id, response_id, position, owner, created_at, item)
SELECT item_id, response_id, position, owner, created_at, item::json FROM new_items
ON CONFLICT (response_id, position) DO UPDATE SET item_id = EXCLUDED.item_id, owner = EXCLUDED.owner,
    created_at = EXCLUDED.created_at, item = EXCLUDED.item
"""


def put_group_args(rows: list[tuple], item_rows: list[tuple]) -> list[list[Any]]:
    """`PUT_GROUP`'s fourteen arrays: the response rows' eight columns, then the item rows' six."""
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(8)]
    items = [list(column) for column in zip(*item_rows, strict=True)] if item_rows else [[] for _ in range(6)]
    return [*columns, *items]
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
