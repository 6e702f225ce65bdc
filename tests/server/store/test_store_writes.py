"""Group commit, store failures and input limits, on every engine (fixtures from tests/server/test_store.py).

* Group commit: writes queued while a commit runs share the next transaction; every writer's await
  returns after that commit, seen by another connection; a failed group fails each of its writers.
* Failures: every engine error is ``StoreUnavailable``; PostgreSQL retries a lost connection once.
* Limits: what the store cannot hold is refused up front (``StoreRefused`` naming the field) on every
  engine alike, and lookups with such ids simply miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.store import (
    MAX_ID_LENGTH,
    MAX_JSON_DEPTH,
    MemoryStore,
    NullStore,
    StoreRefused,
    StoreSpecError,
    StoreUnavailable,
    check_storable,
    open_store,
)
from tests.server.test_store import ROOT, all_engines, durable_engines, engines, ids, response, user

pytestmark = pytest.mark.anyio


def nested(depth: int) -> Any:
    """A JSON value ``depth`` levels deep (lists in a dict)."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


# ------------------------------------------------------------------------------------ group commit


class Blocker:
    """Holds the store's writer (SQLite: its worker thread) until released, so that every write
    submitted meanwhile is queued and must go into one group: a count of commits without timing."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.release = threading.Event()
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Blocker:
        started = threading.Event()

        def hold() -> None:
            started.set()
            self.release.wait(30)

        self.task = asyncio.create_task(self.store._run(hold))
        await asyncio.to_thread(started.wait, 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.task is not None
        await self.task


async def submit_all(store: Any, count: int, prefix: str, **extra: Any) -> list[asyncio.Task]:
    tasks = [
        asyncio.create_task(store.put(response(f"resp_{prefix}{n}", **extra), [user(f"q{n}")], owner="o"))
        for n in range(count)
    ]
    await asyncio.sleep(0)  # every put has queued its write
    return tasks


async def visible_elsewhere(store_spec: str, tmp_path: Path, response_ids: list[str]) -> set[str]:
    """The ids another connection (not the store's) can read: what is committed."""
    wanted = list(response_ids)
    if store_spec.startswith("sqlite"):
        conn = sqlite3.connect(tmp_path / "store.db")
        try:
            marks = ",".join("?" * len(wanted))
            return {r[0] for r in conn.execute(f"SELECT id FROM responses WHERE id IN ({marks})", wanted)}
        finally:
            conn.close()
    import asyncpg

    from server.stores.postgres import split_spec

    dsn, schema = split_spec(store_spec)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        rows = await conn.fetch("SELECT id FROM responses WHERE id = ANY($1::text[])", wanted)
        return {r["id"] for r in rows}
    finally:
        await conn.close()


@durable_engines
async def test_writes_queued_during_a_commit_share_one_transaction(store: Any, store_spec: str, tmp_path: Path) -> None:
    await store.put(response("resp_first"), [], owner="o")
    before = store.commits
    if store_spec.startswith("sqlite"):
        async with Blocker(store):
            tasks = await submit_all(store, 50, "g")
        await asyncio.gather(*tasks)
    else:
        # All 50 puts queue before the committer task next runs (asyncio runs ready callbacks in order).
        await asyncio.gather(*(store.put(response(f"resp_g{n}"), [user(f"q{n}")], owner="o") for n in range(50)))
    assert store.commits - before == 1, f"{store.commits - before} commits for 50 queued puts"
    rids = [f"resp_g{n}" for n in range(50)]
    assert await visible_elsewhere(store_spec, tmp_path, rids) == set(rids)  # committed when put returned
    for n in (0, 49):
        assert ids(await store.input_items(f"resp_g{n}", owner="o")) == [f"msg_g{n}_in0"]


@durable_engines
async def test_a_group_of_puts_stores_what_the_same_puts_one_by_one_store(store: Any, store_spec: str) -> None:
    """SQLite writes a run of plain puts as a few multi-row statements (server/stores/sqlite_responses.py
    ``put_rows``): the result must be the one-by-one result, with the same id put twice in one group
    (the later put wins, its items replace the earlier's) and a conversation put in the middle."""
    conversation = "conv_batch"
    await store.create_conversation(
        {"id": conversation, "object": "conversation", "created_at": 1_700_000_000, "metadata": {}}, [], owner="o"
    )

    async def puts() -> None:
        first = store.put(response("resp_dup", text="first"), [user("q1", "msg_in_1"), user("q2", "msg_in_2")], owner="o")
        tasks = [asyncio.create_task(first)]
        def plain(n: int) -> asyncio.Task:
            return asyncio.create_task(store.put(response(f"resp_run{n}", text=f"t{n}"), [user(f"q{n}")], owner="o"))

        tasks += [plain(n) for n in range(3)]  # the same run as both resp_dup puts
        tasks.append(asyncio.create_task(store.put(response("resp_dup", text="second"), [user("q3", "msg_in_3")], owner="o")))
        tasks.append(asyncio.create_task(store.put(response("resp_conv"), [user("c", "msg_in_c")], owner="o",
                                                   conversation_id=conversation)))  # fmt: skip
        tasks += [plain(n) for n in range(3, 5)]
        await asyncio.sleep(0)
        return tasks

    before = store.commits
    if store_spec.startswith("sqlite"):
        async with Blocker(store):
            tasks = await puts()
        await asyncio.gather(*tasks)
        assert store.commits - before == 1, "the puts were meant to share one group"
    else:
        await asyncio.gather(*await puts())
    dup = await store.get("resp_dup", owner="o")
    assert dup is not None and dup["output"][0]["content"][0]["text"] == "second"
    assert ids(await store.input_items("resp_dup", owner="o")) == ["msg_in_3"]
    found = await store.get_items(["msg_in_1", "msg_in_2", "msg_in_3", "msg_out_resp_dup"], owner="o")
    assert sorted(found) == ["msg_in_3", "msg_out_resp_dup"]  # the first put's input items are gone
    assert found["msg_out_resp_dup"]["content"][0]["text"] == "second"
    for n in range(5):
        got = await store.get(f"resp_run{n}", owner="o")
        assert got is not None and got["output"][0]["content"][0]["text"] == f"t{n}"
        assert ids(await store.input_items(f"resp_run{n}", owner="o")) == [f"msg_run{n}_in0"]
        assert list(await store.get_items([f"msg_out_resp_run{n}"], owner="o")) == [f"msg_out_resp_run{n}"]
    page = await store.conversation_items(conversation, owner="o", limit=10, order="asc")
    assert page is not None and ids(page["data"]) == ["msg_in_c", "msg_out_resp_conv"]


@engines("postgresql")
async def test_a_postgres_group_of_plain_puts_is_one_statement_with_the_one_by_one_result(store: Any) -> None:
    """PostgreSQL writes a group without conversation appends as one statement (`PUT_GROUP` in
    server/stores/postgres_schema.py): a response put again gets exactly its new items (the old
    ones at positions it no longer has are gone, those it has again are replaced), and of an id put
    twice in one group the later put wins."""
    await store.put(response("resp_re", text="old"), [user("a", "msg_re_a"), user("b", "msg_re_b"),
                                                        user("c", "msg_re_c")], owner="o")  # fmt: skip
    statements: list[str] = []
    real_execute = type(store)._put_rows

    async def counting(conn: Any, puts: list[Any]) -> None:
        statements.append(f"{len(puts)} puts")
        await real_execute(conn, puts)

    store._put_rows = counting  # type: ignore[method-assign]
    before = store.commits
    await asyncio.gather(  # queued before the committer runs again: one group
        store.put(response("resp_re", text="new"), [user("d", "msg_re_d")], owner="o"),
        store.put(response("resp_twice", text="first"), [user("e", "msg_tw_e"), user("f", "msg_tw_f")], owner="o"),
        store.put(response("resp_twice", text="second"), [user("g", "msg_tw_g")], owner="o"),
    )
    assert store.commits - before == 1 and statements == ["3 puts"], statements
    assert ids(await store.input_items("resp_re", owner="o")) == ["msg_re_d"]
    found = await store.get_items(["msg_re_a", "msg_re_b", "msg_re_c", "msg_re_d", "msg_out_resp_re"], owner="o")
    assert sorted(found) == ["msg_out_resp_re", "msg_re_d"]
    assert found["msg_out_resp_re"]["content"][0]["text"] == "new"
    twice = await store.get("resp_twice", owner="o")
    assert twice is not None and twice["output"][0]["content"][0]["text"] == "second"
    assert ids(await store.input_items("resp_twice", owner="o")) == ["msg_tw_g"]
    assert sorted(await store.get_items(["msg_tw_e", "msg_tw_f", "msg_tw_g"], owner="o")) == ["msg_tw_g"]


async def test_a_group_of_plain_puts_is_one_sqlite_statement(tmp_path: Path) -> None:
    """The worker lets go of the GIL around every statement and may wait long to get it back from a
    busy event loop (server/stores/sqlite_engine.py), so a group of plain puts must cost one
    statement, whatever its size: traced on the store's own connection."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        statements: list[str] = []
        real = store._conn

        class Counting:  # the connection as the worker sees it, recording what it executes
            in_transaction = property(lambda self: real.in_transaction)

            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                statements.append(sql)
                return real.execute(sql, *args)

        store._conn = Counting()
        try:
            async with Blocker(store):
                tasks = await submit_all(store, 16, "one")
            await asyncio.gather(*tasks)
        finally:
            store._conn = real
        assert statements == ["INSERT INTO put_batch VALUES (?)"], f"{len(statements)} statements for 16 puts"
        assert ids(await store.input_items("resp_one15", owner="o")) == ["msg_one15_in0"]
    finally:
        await store.close()


@durable_engines
async def test_max_batch_1_commits_every_put_alone(store_spec: str) -> None:
    s = open_store(store_spec + ("&" if "?" in store_spec else "?") + "max_batch=1")
    await s.open()
    try:
        assert s.max_batch == 1
        await asyncio.gather(*(s.put(response(f"resp_one{n}"), [], owner=None) for n in range(10)))
        assert s.commits == 10
    finally:
        await s.close()


POISON_SQLITE = (
    "CREATE TRIGGER poison BEFORE INSERT ON responses WHEN NEW.id = 'resp_poison' "
    "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
)
POISON_PG = """
CREATE FUNCTION poison() RETURNS trigger AS $$
BEGIN
    IF NEW.id = 'resp_poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER poison BEFORE INSERT ON responses FOR EACH ROW EXECUTE FUNCTION poison();
"""


async def install_poison(store: Any, store_spec: str) -> None:
    if store_spec.startswith("sqlite"):
        await store._run(lambda: store._db().execute(POISON_SQLITE))
    else:
        async with store.pool.acquire() as conn:
            await conn.execute(POISON_PG)


@durable_engines
async def test_a_failed_group_fails_every_writer_in_it(store: Any, store_spec: str, tmp_path: Path) -> None:
    await install_poison(store, store_spec)
    names = ["resp_a", "resp_b", "resp_poison", "resp_c"]
    if store_spec.startswith("sqlite"):
        async with Blocker(store):
            tasks = [asyncio.create_task(store.put(response(n), [], owner=None)) for n in names]
            await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    else:
        results = await asyncio.gather(*(store.put(response(n), [], owner=None) for n in names), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "poisoned row" in str(results[0])
    assert await visible_elsewhere(store_spec, tmp_path, names) == set()  # the whole group rolled back
    # the store goes on: writes without the poisoned row succeed
    await store.put(response("resp_a"), [], owner=None)
    assert (await store.get("resp_a", owner=None))["id"] == "resp_a"


@engines("sqlite")
async def test_sqlite_failing_write_rolls_back_only_itself(store: Any) -> None:
    """A write raising its own error undoes its statements (its savepoint), others in the group stay."""

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO events VALUES ('resp_x', 1, '{}')")
        raise ValueError("refused halfway")

    async with Blocker(store):
        good = asyncio.create_task(store.put(response("resp_good"), [], owner=None))
        failing = asyncio.create_task(store._write(bad))
        await asyncio.sleep(0)
    await good
    with pytest.raises(ValueError, match="refused halfway"):
        await failing
    assert await store.events("resp_x", after=None) == []
    assert (await store.get("resp_good", owner=None))["id"] == "resp_good"
    # and a failing transaction on its own leaves nothing either, and is not left open
    with pytest.raises(ValueError):
        await store._write(bad)
    assert await store.events("resp_x", after=None) == []
    assert await store._run(lambda: store._db().in_transaction) is False


@pytest.mark.parametrize(
    ("spec", "window", "batch"),
    [
        ("sqlite:///x.db?batch_window_ms=2", 0.002, 256),
        ("x.db?batch_window_ms=0&max_batch=8", 0.0, 8),
        ("sqlite:///x.db", 0.0, 256),
        ("postgresql://u@h/db?schema=s&batch_window_ms=5&max_batch=3", 0.005, 3),
        ("postgresql://u@h/db", 0.0, 256),
    ],
)
def test_batch_settings_come_from_the_spec(spec: str, window: float, batch: int) -> None:
    s = open_store(spec)
    assert s.batch_window == pytest.approx(window)
    assert s.max_batch == batch
    if spec.startswith("postgresql"):
        assert "batch_window_ms" not in s.dsn and "max_batch" not in s.dsn


@pytest.mark.parametrize(
    "spec",
    ["sqlite:///x.db?batch_window_ms=-1", "sqlite:///x.db?batch_window_ms=abc", "x.db?max_batch=0",
     "sqlite:///x.db?nosuch=1", "postgresql://u@h/db?batch_window_ms=x", "postgresql://u@h/db?max_batch=0"],
)  # fmt: skip
def test_bad_batch_settings_are_refused(spec: str) -> None:
    with pytest.raises(StoreSpecError):
        open_store(spec)


# ------------------------------------------------------------------------------------ failures


@engines("sqlite")
async def test_sqlite_full_disk_raises_store_unavailable(store: Any) -> None:
    """``max_page_count`` makes SQLite answer SQLITE_FULL exactly as a full disk does."""
    await store.put(response("resp_before"), [], owner=None)
    pages = await store._run(lambda: store._db().execute("PRAGMA page_count").fetchone()[0])
    await store._run(lambda: store._db().execute(f"PRAGMA max_page_count = {pages}"))
    big = response("resp_big", text="x" * 200_000)
    with pytest.raises(StoreUnavailable, match="full"):
        await store.put(big, [], owner=None)
    assert await store.get("resp_big", owner=None) is None
    assert (await store.get("resp_before", owner=None))["id"] == "resp_before"  # reads still work
    await store._run(lambda: store._db().execute("PRAGMA max_page_count = 1073741823"))
    await store.put(big, [], owner=None)  # and writes again once there is room
    assert (await store.get("resp_big", owner=None))["id"] == "resp_big"


@engines("sqlite")
async def test_sqlite_read_only_database_raises_store_unavailable(store: Any) -> None:
    await store._run(lambda: store._db().execute("PRAGMA query_only = ON"))
    with pytest.raises(StoreUnavailable, match=r"readonly|read-only|query_only"):
        await store.put(response("resp_ro"), [], owner=None)
    with pytest.raises(StoreUnavailable):
        await store.delete("resp_ro", owner=None)
    with pytest.raises(StoreUnavailable):
        await store.append_events("resp_ro", [{"type": "x", "sequence_number": 0}])


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Any:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the max_page_count test covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_sqlite_on_a_really_full_filesystem_raises_store_unavailable(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "small", "1m") as mount:
        s = open_store(f"sqlite:///{mount}/store.db")
        await s.open()
        try:
            await s.put(response("resp_fits"), [], owner=None)
            failure = None
            for n in range(200):
                try:
                    await s.put(response(f"resp_fill{n}", text="y" * 20_000), [], owner=None)
                except StoreUnavailable as exc:
                    failure = exc
                    break
            assert failure is not None, "1 MB filesystem never filled"
            assert isinstance(failure.__cause__, sqlite3.Error)
            assert (await s.get("resp_fits", owner=None))["id"] == "resp_fits"
        finally:
            await s.close()


def pg_spec_with_app(store_spec: str) -> tuple[str, str]:
    app = f"rbtest_{uuid.uuid4().hex[:12]}"
    return f"{store_spec}&application_name={app}", app


async def terminate_backends(postgres_url: str, app: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app
        )
        return len(rows)
    finally:
        await conn.close()


@engines("postgresql")
async def test_postgres_write_after_a_terminated_connection_succeeds(store_spec: str, postgres_url: str) -> None:
    spec, app = pg_spec_with_app(store_spec)
    s = open_store(spec)
    await s.open()
    try:
        await s.put(response("resp_1"), [user("one", "msg_1")], owner=None)
        assert await terminate_backends(postgres_url, app) >= 1
        await s.put(response("resp_2", prev="resp_1"), [user("two", "msg_2")], owner=None)
        assert await terminate_backends(postgres_url, app) >= 1
        assert ids(await s.conversation("resp_2", owner=None)) == ["msg_1", "msg_out_resp_1", "msg_2", "msg_out_resp_2"]
        assert await terminate_backends(postgres_url, app) >= 1
        assert await s.request_cancel("resp_2", owner=None) is not None  # a transaction
    finally:
        await s.close()


SLOW_INSERT = """
CREATE FUNCTION slow() RETURNS trigger AS $$
BEGIN
    IF NEW.id = 'resp_slow' THEN PERFORM pg_sleep(0.5); END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER slow BEFORE INSERT ON responses FOR EACH ROW EXECUTE FUNCTION slow();
"""


@engines("postgresql")
async def test_postgres_connection_lost_mid_write_is_retried_once(store_spec: str, postgres_url: str) -> None:
    """The connection dies while the put's transaction runs: the store reconnects, writes it again
    (once: the conversation gets the items one time), and the writer never sees the loss."""
    import asyncpg

    spec, app = pg_spec_with_app(store_spec)
    s = open_store(spec)
    await s.open()
    try:
        async with s.pool.acquire() as conn:
            await conn.execute(SLOW_INSERT)
        await s.create_conversation({"id": "conv_r"}, [], owner=None)
        put = asyncio.create_task(s.put(response("resp_slow"), [user("q", "msg_q")], owner=None, conversation_id="conv_r"))
        watcher = await asyncpg.connect(postgres_url)
        try:
            for _ in range(200):
                busy = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' "
                    "AND query LIKE '%INSERT INTO responses%'",
                    app,
                )
                if busy:
                    break
                await asyncio.sleep(0.01)
            assert busy, "the put never reached the database"
        finally:
            await watcher.close()
        assert await terminate_backends(postgres_url, app) >= 1
        await put
        assert s.retries == 1
        assert (await s.get("resp_slow", owner=None))["id"] == "resp_slow"
        assert ids(await s.all_conversation_items("conv_r", owner=None)) == ["msg_q", "msg_out_resp_slow"]
    finally:
        await s.close()


@engines("postgresql")
async def test_postgres_write_raises_store_unavailable_when_the_retry_fails_too(store: Any) -> None:
    await store._pool.close()  # every connection attempt now fails: the retry cannot help
    with pytest.raises(StoreUnavailable, match="put"):
        await store.put(response("resp_gone"), [], owner=None)
    with pytest.raises(StoreUnavailable):
        await store.get("resp_gone", owner=None)
    assert store.retries >= 1


@engines("postgresql")
async def test_postgres_engine_error_is_store_unavailable(store: Any) -> None:
    async with store.pool.acquire() as conn:
        await conn.execute("ALTER TABLE events ADD CONSTRAINT small CHECK (sequence_number < 5)")
    with pytest.raises(StoreUnavailable, match="CheckViolation"):
        await store.append_events("resp_x", [{"type": "x", "sequence_number": 9}])


# ------------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("build", "field", "reason"),
    [
        (lambda: (response("resp_\x00"), []), "id", "NUL"),
        (lambda: (response("resp_" + "x" * MAX_ID_LENGTH), []), "id", "longest id"),
        (lambda: (response("resp_ok"), [user("q", "msg_\x00")]), "input[0].id", "NUL"),
        (lambda: (response("resp_ok"), [user("q"), user("q", "m" * 3000)]), "input[1].id", "3000 characters"),
        (lambda: (response("resp_ok", prev="resp_\x00x"), []), "previous_response_id", "NUL"),
        (lambda: ({**response("resp_ok"), "output": [{"id": "fc_" + "9" * 300, "type": "function_call"}]}, []),
         "output[0].id", "longest id"),
        (lambda: (response("resp_ok"), [{"type": "function_call_output", "call_id": "c\x00", "output": "x"}]),
         "input[0].call_id", "NUL"),
        (lambda: (response("resp_ok"), [{"type": "message", "role": "user", "content": nested(1000)}]),
         "input[0].content", "nested more than"),
        (lambda: (response("resp_ok", metadata={"k": nested(MAX_JSON_DEPTH)}), []), "metadata.k", "nested"),
        (lambda: (response("resp_ok"), [{"type": "message", "role": "user", "content": "x", "a\x00b": 1}]),
         "input[0]", "key containing a NUL"),
    ],
)  # fmt: skip
def test_check_storable_names_the_field(build: Any, field: str, reason: str) -> None:
    body, items = build()
    with pytest.raises(StoreRefused) as info:
        check_storable(body, items)
    assert info.value.field.startswith(field), info.value.field
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_check_storable_accepts_what_every_engine_holds() -> None:
    body = response("resp_" + "x" * (MAX_ID_LENGTH - 5))
    body["output"][0]["id"] = "msg_o"
    check_storable(body, [user("text with \x00 inside", "msg_1")])
    # a JSON schema with a property called "id" is not an id
    tools = [{"type": "function", "name": "f", "parameters": {"properties": {"id": {"type": "string"}}}}]
    check_storable(response("resp_t", tools=tools), [{"type": "message", "role": "user", "content": nested(100)}])


def test_the_fast_check_never_passes_what_the_full_check_refuses() -> None:
    """`_fits` (no field paths) must say False wherever `_check_json` raises, including for types
    JSON parsing never makes (a str subclass holding a NUL id, a tuple, a dict subclass)."""
    from server.stores.limits import _check_json, _fits

    class Text(str):
        pass

    class Mapping(dict):
        pass

    values = [
        {"id": "x" * (MAX_ID_LENGTH + 1)}, {"id": "a\x00"}, {"a\x00": 1}, {1: "x"}, nested(MAX_JSON_DEPTH + 1),
        {"id": Text("a\x00")}, {"k": ("id", "a\x00")}, Mapping(id="a\x00"), [{"call_id": "c" * 300}],
        {"tools": [{"parameters": {"properties": {"id": {"type": "string"}}}}], "n": 1.5, "b": None, "t": True},
    ]  # fmt: skip
    for value in values:
        try:
            _check_json(value, "", 1)
            full = True
        except StoreRefused:
            full = False
        assert not _fits(value, 1) or full, value
    assert _fits(values[-1], 1)


@all_engines
async def test_unstorable_input_is_refused_alike_and_nothing_is_written(store: Any) -> None:
    cases = [
        (response("resp_nul"), [user("q", "msg_\x00")]),
        (response("resp_long"), [user("q", "m" * 3000)]),
        (response("resp_deep"), [{"type": "message", "role": "user", "content": nested(1000)}]),
        (response("resp_\x00"), []),
    ]
    for body, items in cases:
        with pytest.raises(StoreRefused):
            await store.put(body, items, owner=None)
        assert await store.get(body["id"].replace("\x00", ""), owner=None) is None
    await store.put(response("resp_x", status="in_progress"), [], owner=None)
    with pytest.raises(StoreRefused):
        await store.update_response(response("resp_x", prev="p" * 1000), owner=None)
    assert (await store.get("resp_x", owner=None))["status"] == "in_progress"


@all_engines
async def test_what_passes_the_check_is_stored_on_every_engine(store: Any) -> None:
    """The limits sit below what each engine accepts: the largest allowed values round-trip."""
    long_id = "msg_" + "z" * (MAX_ID_LENGTH - 4)
    deep = {"type": "message", "role": "user", "content": nested(MAX_JSON_DEPTH - 2), "id": "msg_deep"}
    body = response("resp_" + "r" * (MAX_ID_LENGTH - 5), text="a\x00b")
    body["output"][0]["id"] = "msg_" + "o" * (MAX_ID_LENGTH - 4)
    items = [user("NUL \x00 inside text", long_id), deep]
    check_storable(body, items)
    await store.put(body, items, owner=None)
    got = await store.get(body["id"], owner=None)
    assert got == body
    assert await store.input_items(body["id"], owner=None) == items
    assert (await store.get_item(long_id, owner=None))["content"][0]["text"] == "NUL \x00 inside text"


@all_engines
async def test_lookups_with_ids_no_engine_can_hold_miss(store: Any) -> None:
    await store.put(response("resp_real"), [user("q", "msg_real")], owner=None)
    for bad in ["resp_\x00", "resp_real\x00", "r" * 5000, ""]:
        assert await store.get(bad, owner=None) is None
        assert await store.input_items(bad, owner=None) is None
        assert await store.conversation(bad, owner=None) is None
        assert await store.get_item(bad, owner=None) is None
        assert await store.get_items([bad, "msg_real"], owner=None) == {"msg_real": user("q", "msg_real")}
        assert await store.delete(bad, owner=None) is False
        assert await store.request_cancel(bad, owner=None) is None
        assert await store.update_response({**response("x"), "id": bad}, owner=None) is False
        assert await store.events(bad, after=None) == []
        assert await store.cancel_requested(bad) is True
        assert await store.get_conversation(bad, owner=None) is None
        assert await store.conversation_items(bad, owner=None) is None
        assert await store.all_conversation_items(bad, owner=None) is None
    assert (await store.get("resp_real", owner=None))["id"] == "resp_real"


# --------------------------------------------------------------------------------- structure


STORE_MODULES = sorted(p.stem for p in (ROOT / "server" / "stores").glob("*.py") if p.stem != "__init__")
SQL_ENGINE_MODULES = [m for m in STORE_MODULES if m.startswith(("sqlite", "postgres"))]


@pytest.mark.parametrize("module", STORE_MODULES)
def test_each_store_module_loads_alone_without_server_store(module: str) -> None:
    """Each module of server/stores/ imports in a fresh process on its own (no import circle needs
    another module loaded first) and never loads server/store.py, the package's front door."""
    code = (
        f"import sys; import server.stores.{module}; "
        "assert 'server.store' not in sys.modules, 'a store module imports server.store'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_server_store_loads_no_sql_engine_until_a_spec_names_one() -> None:
    engines = [f"server.stores.{m}" for m in SQL_ENGINE_MODULES]
    code = (
        "import sys; import server.store; "
        f"loaded = [m for m in {engines!r} if m in sys.modules]; "
        "assert not loaded, loaded; "
        "server.store.open_store('sqlite:///x.db'); "
        "assert 'server.stores.sqlite' in sys.modules and 'server.stores.postgres' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_store_modules_import_no_circle() -> None:
    """The import graph of server/stores/ (module-level imports) has no cycle."""
    import ast

    graph: dict[str, set[str]] = {}
    for module in STORE_MODULES:
        tree = ast.parse((ROOT / "server" / "stores" / f"{module}.py").read_text())
        graph[module] = {
            node.module.removeprefix("server.stores.")
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("server.stores.")
        }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in STORE_MODULES:
        visit(module, ())


def test_no_store_module_is_over_400_lines() -> None:
    sizes = {m: len((ROOT / "server" / "stores" / f"{m}.py").read_text().splitlines()) for m in STORE_MODULES}
    sizes["store"] = len((ROOT / "server" / "store.py").read_text().splitlines())
    assert max(sizes.values()) <= 400, sizes


def test_every_store_says_whether_it_keeps_responses() -> None:
    from server.stores.postgres import PostgresStore
    from server.stores.sqlite import SQLiteStore

    assert NullStore.keeps_responses is False
    assert all(cls.keeps_responses is True for cls in (MemoryStore, SQLiteStore, PostgresStore))
    assert open_store("none").keeps_responses is False
    assert open_store("memory").keeps_responses is True
    from server.store import ResponseStore

    for spec in ("none", "memory", "sqlite:///x.db", "postgresql://u@h/db"):
        assert isinstance(open_store(spec), ResponseStore), spec  # every method of the interface


def test_the_stores_package_is_installed_with_the_server() -> None:
    """``[tool.setuptools] packages`` lists packages one by one (subpackages are not found on their
    own): without ``server.stores`` a wheel, and so the Docker image, would have no store at all."""
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "server.stores" in packages, packages
