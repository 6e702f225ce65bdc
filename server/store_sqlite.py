"""Kept for importers outside the store (tests/test_server_pump.py): the engine lives in
server/stores/sqlite.py."""

from server.stores.sqlite import SQLiteStore

__all__ = ["SQLiteStore"]
