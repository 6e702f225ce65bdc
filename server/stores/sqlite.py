"""``--store sqlite:///path.db``: the default engine, one SQLite file needing no set-up.

The engine is cut by job: server/stores/sqlite_engine.py holds the file, the worker thread and group
commit; server/stores/sqlite_responses.py and server/stores/sqlite_conversations.py hold the
operations, each a subclass of the core so it reads (and type-checks) on its own against ``_run`` and
``_write``. Mixins rather than collaborator objects: the interface is one flat set of methods, and
collaborators would need every one of them forwarded. Imports only those three modules.
"""

from __future__ import annotations

from server.stores.sqlite_conversations import SQLiteConversations
from server.stores.sqlite_engine import DEFAULT_MAX_BATCH
from server.stores.sqlite_responses import SQLiteResponses


class SQLiteStore(SQLiteResponses, SQLiteConversations):
    """``--store sqlite:///path.db``: see server/stores/sqlite_engine.py for the threading and
    durability choices."""

    keeps_responses = True


__all__ = ["DEFAULT_MAX_BATCH", "SQLiteStore"]
