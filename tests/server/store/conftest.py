"""The store suites in this folder run on the engines of tests/server/test_store.py: its fixtures, shared
here so each test asks for ``store`` / ``store_spec`` by name (memory, SQLite, the real PostgreSQL)."""

from tests.server.test_store import anyio_backend, pg_schema, postgres_url, store, store_spec  # noqa: F401
