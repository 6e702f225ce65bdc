"""``--store postgresql://…``: the engine to use when several server processes share state.

Cut like the SQLite engine: server/stores/postgres_engine.py holds the pool, the retry on a lost
connection and group commit; server/stores/postgres_responses.py and
server/stores/postgres_conversations.py hold the operations as subclasses of the core (mixins, for the
reason server/stores/sqlite.py gives); server/stores/postgres_schema.py the tables and the spec.
Imports only those four modules.
"""

from __future__ import annotations

from server.stores.postgres_conversations import PostgresConversations
from server.stores.postgres_responses import PostgresResponses
from server.stores.postgres_schema import parse_spec, split_spec


class PostgresStore(PostgresResponses, PostgresConversations):
    """``--store postgresql://…``: see server/stores/postgres_engine.py for pooling, retries and
    group commit."""

    keeps_responses = True


__all__ = ["PostgresStore", "parse_spec", "split_spec"]
