"""One suite for every store engine: memory, SQLite (a file in tmp_path) and the real PostgreSQL server.

The PostgreSQL engine runs against postgresql://postgres@127.0.0.1:5432/test (started the way the
machine's documentation says when it is down), each test in a schema of its own that is dropped
afterwards, so parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.store import (
    MemoryStore,
    NullStore,
    StoreSpecError,
    open_store,
)

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------------------------- PostgreSQL


def _pg_ready() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_URL, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test database, started as the machine's documentation says when it is not running."""
    if not _pg_ready():
        versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
        if not versions:
            pytest.fail("PostgreSQL is not running and /etc/postgresql holds no cluster to start")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", sorted(versions)[-1], "main", "start"],
            check=False,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not _pg_ready():
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not come up at {PG_URL}")
            time.sleep(0.5)
    return PG_URL


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name unique to this test (dropped afterwards)."""
    schema = f"rb_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield schema
    asyncio.run(_drop_schema(postgres_url, schema))


# ---------------------------------------------------------------------------------------- engines

ENGINES = ["memory", "sqlite", "postgresql"]


@pytest.fixture
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The spec of this test's engine; the same spec opened twice reaches the same data (but memory)."""
    engine = request.param
    if engine == "memory":
        return "memory"
    if engine == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    schema = request.getfixturevalue("pg_schema")
    return f"{request.getfixturevalue('postgres_url')}?schema={schema}"


@pytest.fixture
async def store(store_spec: str) -> AsyncIterator[Any]:
    s = open_store(store_spec)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def engines(*names: str) -> Any:
    return pytest.mark.parametrize("store_spec", list(names), indirect=True)


all_engines = engines(*ENGINES)
durable_engines = engines("sqlite", "postgresql")


def response(rid: str, *, prev: str | None = None, text: str = "hi", created_at: int | None = None, **extra: Any) -> dict:
    """A small completed Response object whose output message id is derived from its id."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "completed",
        "model": "m",
        "instructions": f"instructions of {rid}",
        "previous_response_id": prev,
        "output": [
            {
                "id": f"msg_out_{rid}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
    }
    body.update(extra)
    return body


def user(text: str, item_id: str | None = None) -> dict:
    item: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id:
        item["id"] = item_id
    return item


def ids(items: list[dict] | None) -> list[str]:
    assert items is not None
    return [item["id"] for item in items]


# -------------------------------------------------------------------------------- basic operations


@all_engines
async def test_put_then_get_returns_the_same_response(store: Any) -> None:
    r = response("resp_a", text="héllo ✓", metadata={"k": "v"})
    await store.put(r, [user("q", "msg_in_a")], owner=None)
    got = await store.get("resp_a", owner=None)
    assert got == r
    assert list(got) == list(r)  # key order survives (json, not jsonb, in PostgreSQL)
    assert await store.get("resp_missing", owner=None) is None


@all_engines
async def test_returned_values_are_copies(store: Any) -> None:
    r = response("resp_copy")
    items = [user("q", "msg_q")]
    await store.put(r, items, owner=None)
    r["status"] = "failed"
    items[0]["role"] = "system"
    got = await store.get("resp_copy", owner=None)
    assert got["status"] == "completed"
    got["status"] = "mutated"
    assert (await store.get("resp_copy", owner=None))["status"] == "completed"
    assert (await store.input_items("resp_copy", owner=None))[0]["role"] == "user"


@all_engines
async def test_put_replaces_an_existing_response(store: Any) -> None:
    await store.put(response("resp_r", text="one"), [user("a", "msg_1")], owner=None)
    await store.put(response("resp_r", text="two"), [user("b", "msg_2")], owner=None)
    got = await store.get("resp_r", owner=None)
    assert got["output"][0]["content"][0]["text"] == "two"
    assert ids(await store.input_items("resp_r", owner=None)) == ["msg_2"]


@all_engines
async def test_delete_removes_response_items_and_events(store: Any) -> None:
    await store.put(response("resp_d"), [user("q", "msg_d")], owner=None)
    await store.append_events("resp_d", [{"type": "response.created", "sequence_number": 0}])
    assert await store.delete("resp_d", owner=None) is True
    assert await store.get("resp_d", owner=None) is None
    assert await store.input_items("resp_d", owner=None) is None
    assert await store.events("resp_d", after=None) == []
    assert await store.get_item("msg_d", owner=None) is None
    assert await store.delete("resp_d", owner=None) is False


@all_engines
async def test_input_items_keep_order_and_get_ids(store: Any) -> None:
    items = [user(f"m{i}", f"msg_{i:02d}") for i in range(5)]
    items.insert(2, user("no id"))
    items.append({"type": "function_call_output", "call_id": "call_1", "output": "42"})
    await store.put(response("resp_items"), items, owner=None)
    got = await store.input_items("resp_items", owner=None)
    assert [i["content"][0]["text"] if i["type"] == "message" else i["output"] for i in got] == [
        "m0", "m1", "no id", "m2", "m3", "m4", "42",
    ]  # fmt: skip
    assert got[0]["id"] == "msg_00"
    generated = [got[2]["id"], got[-1]["id"]]
    assert all(generated) and len(set(ids(got))) == len(got)
    assert generated[0].startswith("msg_") and generated[1].startswith("fco_")
    assert await store.input_items("resp_none", owner=None) is None


# ----------------------------------------------------------------------------------- conversation


@all_engines
async def test_conversation_walks_the_chain_oldest_first(store: Any) -> None:
    await store.put(response("resp_1"), [user("first", "msg_u1")], owner=None)
    await store.put(response("resp_2", prev="resp_1"), [user("second", "msg_u2")], owner=None)
    call = {"id": "fc_3", "type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"}
    await store.put(response("resp_3", prev="resp_2", output=[call]), [user("third", "msg_u3")], owner=None)
    chain = await store.conversation("resp_3", owner=None)
    assert ids(chain) == ["msg_u1", "msg_out_resp_1", "msg_u2", "msg_out_resp_2", "msg_u3", "fc_3"]
    # instructions are not items and never carried over
    assert all("instructions" not in item for item in chain)
    assert ids(await store.conversation("resp_1", owner=None)) == ["msg_u1", "msg_out_resp_1"]


@all_engines
async def test_conversation_is_none_when_a_link_is_missing(store: Any) -> None:
    await store.put(response("resp_1"), [user("a", "msg_a")], owner=None)
    await store.put(response("resp_2", prev="resp_1"), [user("b", "msg_b")], owner=None)
    await store.put(response("resp_3", prev="resp_2"), [user("c", "msg_c")], owner=None)
    assert await store.conversation("resp_unknown", owner=None) is None
    assert await store.delete("resp_2", owner=None)
    assert await store.conversation("resp_3", owner=None) is None
    assert await store.conversation("resp_1", owner=None) is not None
    await store.put(response("resp_orphan", prev="resp_never"), [user("x", "msg_x")], owner=None)
    assert await store.conversation("resp_orphan", owner=None) is None


@all_engines
async def test_conversation_stops_on_a_cycle(store: Any) -> None:
    await store.put(response("resp_x", prev="resp_y"), [user("x", "msg_x")], owner=None)
    await store.put(response("resp_y", prev="resp_x"), [user("y", "msg_y")], owner=None)
    assert await store.conversation("resp_x", owner=None) is None


@all_engines
async def test_item_lookup_prefers_the_latest_copy(store: Any) -> None:
    await store.put(response("resp_1", created_at=1000), [user("old", "msg_shared")], owner=None)
    await store.put(response("resp_2", created_at=2000), [user("new", "msg_shared")], owner=None)
    found = await store.get_items(["msg_shared", "msg_out_resp_1", "msg_nope"], owner=None)
    assert set(found) == {"msg_shared", "msg_out_resp_1"}
    assert found["msg_shared"]["content"][0]["text"] == "new"
    assert (await store.get_item("msg_out_resp_2", owner=None))["type"] == "message"
    assert await store.get_item("msg_nope", owner=None) is None


# ---------------------------------------------------------------------------------------- owners


@all_engines
async def test_records_are_visible_only_to_their_owner(store: Any) -> None:
    await store.put(response("resp_alice"), [user("a", "msg_alice")], owner="alice")
    await store.put(response("resp_open"), [user("o", "msg_open")], owner=None)
    await store.put(response("resp_alice2", prev="resp_alice"), [user("a2", "msg_alice2")], owner="alice")
    for other in ("bob", None):
        assert await store.get("resp_alice", owner=other) is None
        assert await store.input_items("resp_alice", owner=other) is None
        assert await store.conversation("resp_alice2", owner=other) is None
        assert await store.get_items(["msg_alice"], owner=other) == {}
        assert await store.delete("resp_alice", owner=other) is False
        assert await store.request_cancel("resp_alice", owner=other) is None
    assert await store.get("resp_open", owner="alice") is None
    assert (await store.get("resp_alice", owner="alice"))["id"] == "resp_alice"
    assert ids(await store.conversation("resp_alice2", owner="alice")) == [
        "msg_alice", "msg_out_resp_alice", "msg_alice2", "msg_out_resp_alice2",
    ]  # fmt: skip
    # A chain may not borrow another owner's link.
    await store.put(response("resp_bob", prev="resp_alice"), [user("b", "msg_bob")], owner="bob")
    assert await store.conversation("resp_bob", owner="bob") is None


# ---------------------------------------------------------------------------------------- purge


@all_engines
async def test_purge_deletes_only_old_responses(store: Any) -> None:
    now = int(time.time())
    await store.put(response("resp_old", created_at=now - 10 * 86400), [user("o", "msg_o")], owner=None)
    await store.append_events("resp_old", [{"type": "response.created", "sequence_number": 0}])
    await store.put(response("resp_mid", created_at=now - 2 * 86400), [user("m", "msg_m")], owner="k")
    await store.put(response("resp_new", created_at=now), [user("n", "msg_n")], owner=None)
    assert await store.purge(5) == 1
    assert await store.get("resp_old", owner=None) is None
    assert await store.events("resp_old", after=None) == []
    assert await store.get_item("msg_o", owner=None) is None
    assert await store.get("resp_mid", owner="k") is not None
    assert await store.purge(1) == 1
    assert await store.get("resp_new", owner=None) is not None
    assert await store.purge(1) == 0


# ---------------------------------------------------------------------------------------- events


@all_engines
async def test_events_are_ordered_and_filtered_by_sequence_number(store: Any) -> None:
    await store.put(response("resp_ev", status="in_progress"), [], owner=None)
    await store.append_events("resp_ev", [{"type": f"e{n}", "sequence_number": n} for n in (0, 1, 2)])
    await store.append_events("resp_ev", [{"type": f"e{n}", "sequence_number": n} for n in (5, 3, 4)])
    all_events = await store.events("resp_ev", after=None)
    assert [e["sequence_number"] for e in all_events] == [0, 1, 2, 3, 4, 5]
    assert [e["type"] for e in await store.events("resp_ev", after=2)] == ["e3", "e4", "e5"]
    assert await store.events("resp_ev", after=5) == []
    assert await store.events("resp_other", after=None) == []
    # a repeated sequence number replaces (a retried write is idempotent)
    await store.append_events("resp_ev", [{"type": "again", "sequence_number": 4}])
    assert [e["type"] for e in await store.events("resp_ev", after=3)] == ["again", "e5"]


# ----------------------------------------------------------------------- background bookkeeping


@all_engines
async def test_cancel_and_update_of_a_background_response(store: Any) -> None:
    queued = response("resp_bg", status="queued", background=True, output=[])
    await store.put(queued, [user("long job", "msg_job")], owner="k")
    assert await store.cancel_requested("resp_bg") is False
    running = {**queued, "status": "in_progress"}
    assert await store.update_response(running, owner="k") is True
    assert (await store.get("resp_bg", owner="k"))["status"] == "in_progress"
    cancelled = await store.request_cancel("resp_bg", owner="k")
    assert cancelled is not None and cancelled["status"] == "cancelled"
    assert await store.cancel_requested("resp_bg") is True
    # the job's final write loses against the cancel
    assert await store.update_response({**queued, "status": "completed"}, owner="k") is False
    assert (await store.get("resp_bg", owner="k"))["status"] == "cancelled"
    # cancelling again is idempotent
    assert (await store.request_cancel("resp_bg", owner="k"))["status"] == "cancelled"
    # a finished response is not changed by a cancel
    await store.put(response("resp_done", background=True), [], owner="k")
    assert (await store.request_cancel("resp_done", owner="k"))["status"] == "completed"
    assert await store.cancel_requested("resp_done") is False
    assert await store.request_cancel("resp_nothing", owner="k") is None
    # a job whose response was deleted (on any replica) must stop too
    assert await store.cancel_requested("resp_nothing") is True
    assert await store.delete("resp_done", owner="k")
    assert await store.cancel_requested("resp_done") is True


@all_engines
async def test_update_response_indexes_new_output_items(store: Any) -> None:
    await store.put(response("resp_u", status="in_progress", output=[]), [user("q", "msg_q")], owner=None)
    assert await store.get_item("msg_out_resp_u", owner=None) is None
    assert await store.update_response(response("resp_u"), owner=None) is True
    assert (await store.get_item("msg_out_resp_u", owner=None))["role"] == "assistant"
    assert (await store.get_item("msg_q", owner=None))["role"] == "user"
    assert await store.update_response(response("resp_absent"), owner=None) is False


# ------------------------------------------------------------------------------------- durability


@durable_engines
async def test_data_survives_close_and_reopen(store_spec: str) -> None:
    first = open_store(store_spec)
    await first.open()
    await first.put(response("resp_keep"), [user("q", "msg_keep")], owner="o")
    await first.append_events("resp_keep", [{"type": "response.created", "sequence_number": 0}])
    await first.close()
    second = open_store(store_spec)
    await second.open()  # creating the schema again must not lose anything
    try:
        assert (await second.get("resp_keep", owner="o"))["id"] == "resp_keep"
        assert ids(await second.conversation("resp_keep", owner="o")) == ["msg_keep", "msg_out_resp_keep"]
        assert len(await second.events("resp_keep", after=None)) == 1
    finally:
        await second.close()


WRITER = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from server.store import open_store

async def main() -> None:
    store = open_store({spec!r})
    await store.open()
    for n in range(3):
        response = {{"id": f"resp_k{{n}}", "created_at": int(time.time()), "status": "completed", "output": []}}
        await store.put(response, [{{"id": f"msg_k{{n}}", "type": "message", "role": "user", "content": "x"}}],
                        owner=None)
    print("stored", flush=True)
    time.sleep(60)  # killed here, with the store still open

asyncio.run(main())
"""


@durable_engines
async def test_put_is_durable_when_the_process_is_killed(store_spec: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), spec=store_spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "stored"
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    reopened = open_store(store_spec)
    await reopened.open()
    try:
        for n in range(3):
            assert (await reopened.get(f"resp_k{n}", owner=None))["status"] == "completed"
            assert ids(await reopened.input_items(f"resp_k{n}", owner=None)) == [f"msg_k{n}"]
    finally:
        await reopened.close()


@engines("sqlite")
async def test_sqlite_file_is_in_wal_mode_and_readable_by_another_connection(store: Any, tmp_path: Path) -> None:
    import sqlite3

    await store.put(response("resp_wal"), [], owner=None)
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT id FROM responses").fetchall() == [("resp_wal",)]
    finally:
        conn.close()


@engines("sqlite")
async def test_sqlite_calls_run_off_the_event_loop(store: Any) -> None:
    """While the worker thread is busy, the loop keeps running other tasks."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await store._run(time.sleep, 0.2)  # occupy the store's one worker thread
    finally:
        task.cancel()
    assert ticks > 10


# ------------------------------------------------------------------------------ several replicas


@engines("postgresql")
async def test_two_postgres_instances_share_state(store_spec: str) -> None:
    a, b = open_store(store_spec), open_store(store_spec)
    await asyncio.gather(a.open(), b.open())
    try:
        await a.put(response("resp_1"), [user("one", "msg_1")], owner=None)
        await b.put(response("resp_2", prev="resp_1"), [user("two", "msg_2")], owner=None)
        assert ids(await a.conversation("resp_2", owner=None)) == [
            "msg_1", "msg_out_resp_1", "msg_2", "msg_out_resp_2",
        ]  # fmt: skip
        await a.put(response("resp_bg", status="in_progress", background=True), [], owner=None)
        assert (await b.request_cancel("resp_bg", owner=None))["status"] == "cancelled"
        assert await a.cancel_requested("resp_bg") is True
        await b.append_events("resp_1", [{"type": "x", "sequence_number": 0}])
        assert len(await a.events("resp_1", after=None)) == 1
        assert await b.delete("resp_1", owner=None)
        assert await a.conversation("resp_2", owner=None) is None
    finally:
        await asyncio.gather(a.close(), b.close())


@engines("postgresql")
async def test_many_replicas_can_create_the_schema_at_once(store_spec: str) -> None:
    stores = [open_store(store_spec) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].put(response("resp_x"), [], owner=None)
        assert (await stores[-1].get("resp_x", owner=None))["id"] == "resp_x"
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# ---------------------------------------------------------------------------------- specs & none


@pytest.mark.parametrize(
    ("spec", "kind", "check"),
    [
        ("memory", MemoryStore, None),
        ("none", NullStore, None),
        ("sqlite:///./x/rb.db", "SQLiteStore", lambda s: str(s.path) == "x/rb.db"),
        ("sqlite:////tmp/abs.db", "SQLiteStore", lambda s: str(s.path) == "/tmp/abs.db"),
        ("data/rb.db", "SQLiteStore", lambda s: str(s.path) == "data/rb.db"),
        (None, "SQLiteStore", lambda s: str(s.path) == "responses-bridge.db"),
        (
            "postgresql://u@h:5/db?schema=s1&application_name=x",
            "PostgresStore",
            lambda s: s.schema == "s1" and "schema" not in s.dsn and "application_name=x" in s.dsn,
        ),
    ],
)
def test_open_store_spec(spec: str | None, kind: Any, check: Callable[[Any], bool] | None) -> None:
    store = open_store(spec)
    name = kind if isinstance(kind, str) else kind.__name__
    assert type(store).__name__ == name
    if check is not None:
        assert check(store)


@pytest.mark.parametrize("spec", ["mysql://x", "sqlite://", "redis://h", "postgresql://h/db?schema=bad;name"])
def test_open_store_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises((StoreSpecError, ValueError)):
        open_store(spec)


async def test_none_store_keeps_nothing() -> None:
    store = open_store("none")
    await store.open()
    await store.put(response("resp_n"), [user("q", "msg_n")], owner=None)
    assert await store.get("resp_n", owner=None) is None
    assert await store.conversation("resp_n", owner=None) is None
    assert await store.input_items("resp_n", owner=None) is None
    assert await store.delete("resp_n", owner=None) is False
    await store.close()


async def test_run_retention_purges_at_once_and_repeatedly() -> None:
    from server.store import run_retention

    store = MemoryStore()
    now = int(time.time())
    await store.put(response("resp_old", created_at=now - 3 * 86400), [], owner=None)
    task = asyncio.create_task(run_retention(store, 1, every_seconds=0.05))
    try:
        for _ in range(100):
            if await store.get("resp_old", owner=None) is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("resp_old", owner=None) is None
        await store.put(response("resp_old2", created_at=now - 3 * 86400), [], owner=None)
        await store.put(response("resp_new", created_at=now), [], owner=None)
        for _ in range(100):
            if await store.get("resp_old2", owner=None) is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("resp_old2", owner=None) is None
        assert await store.get("resp_new", owner=None) is not None
    finally:
        task.cancel()
