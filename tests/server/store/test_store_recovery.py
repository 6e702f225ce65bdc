"""Recovery at start: background jobs whose replica is gone end as ``failed`` / ``server_restarted``.

A replica registers (``register_replica``), renews its heartbeat, and owns the jobs it stores while they
run. ``recover_orphans`` ends the jobs of replicas that are gone: heartbeat older than ``stale_after``,
or a process on this machine that no longer exists. Replica "A" runs as a real subprocess here, so
that it can be alive, or killed with SIGKILL, while replica "B" (this process) recovers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from server.store import SERVER_RESTARTED, MemoryStore, open_store
from tests.server.test_store import ROOT, durable_engines, response

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

REPLICA = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from server.store import open_store

async def main() -> None:
    store = open_store({spec!r})
    await store.open()
    await store.register_replica("replica-a")
    for n in range(3):
        job = {{"id": f"resp_a{{n}}", "created_at": int(time.time()), "status": "in_progress",
                "background": True, "output": []}}
        await store.put(job, [], owner="o")
    await store.append_events("resp_a0", [{{"type": "response.created", "sequence_number": 0}},
                                          {{"type": "response.in_progress", "sequence_number": 1}}])
    done = {{"id": "resp_a_done", "created_at": int(time.time()), "status": "completed", "output": []}}
    await store.put(done, [], owner="o")
    print("running", flush=True)
    while True:
        await store.heartbeat("replica-a")
        await asyncio.sleep(0.2)

asyncio.run(main())
"""


class Replica:
    def __init__(self, spec: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA.format(root=str(ROOT), spec=spec)], stdout=subprocess.PIPE, text=True
        )

    async def started(self) -> None:
        line = await asyncio.to_thread(self.proc.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "running", line

    async def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert await asyncio.to_thread(self.proc.wait, 30) == -signal.SIGKILL

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def statuses(store: Any, ids: list[str]) -> dict[str, str]:
    return {rid: (await store.get(rid, owner="o"))["status"] for rid in ids}


A_JOBS = ["resp_a0", "resp_a1", "resp_a2"]


@durable_engines
async def test_jobs_of_a_live_replica_stay_and_of_a_killed_one_end(store: Any, store_spec: str) -> None:
    replica = Replica(store_spec)
    try:
        await replica.started()
        await store.register_replica("replica-b")
        await store.put(response("resp_b0", status="in_progress", background=True), [], owner="o")
        # A is alive (fresh heartbeat, process exists): nothing of A's is touched, nor B's own job
        assert await store.recover_orphans("replica-b", stale_after=30) == []
        assert set((await statuses(store, [*A_JOBS, "resp_b0"])).values()) == {"in_progress"}
        await replica.kill()
        # A is gone (its process no longer exists): its running jobs end, its finished one does not
        ended = await store.recover_orphans("replica-b", stale_after=30)
        assert sorted(ended) == A_JOBS
        for rid in A_JOBS:
            got = await store.get(rid, owner="o")
            assert got["status"] == "failed"
            assert got["error"] == SERVER_RESTARTED
            assert await store.cancel_requested(rid) is True
        assert (await store.get("resp_a_done", owner="o"))["status"] == "completed"
        assert (await store.get("resp_b0", owner="o"))["status"] == "in_progress"
        # followers end: the job's events end with a terminal response.failed after what was there
        events = await store.events("resp_a0", after=None)
        assert [e["sequence_number"] for e in events] == [0, 1, 2]
        assert events[-1]["type"] == "response.failed"
        assert events[-1]["response"]["error"]["code"] == "server_restarted"
        assert [e["sequence_number"] for e in await store.events("resp_a1", after=None)] == [0]
        # recovering again changes nothing
        assert await store.recover_orphans("replica-b", stale_after=30) == []
    finally:
        replica.close()


@durable_engines
async def test_a_replica_on_another_machine_is_gone_only_when_its_heartbeat_is_stale(store: Any, store_spec: str) -> None:
    """Across machines the pid says nothing: only the heartbeat's age counts."""
    other = open_store(store_spec)
    await other.open()
    try:
        await other.register_replica("replica-far")
        await other.put(response("resp_far", status="queued", background=True), [], owner="o")
        await set_replica_host(store, store_spec, "replica-far", "another-machine", age=5)
        assert await store.recover_orphans("replica-here", stale_after=30) == []
        await set_replica_host(store, store_spec, "replica-far", "another-machine", age=31)
        assert await store.recover_orphans("replica-here", stale_after=30) == ["resp_far"]
        assert (await other.get("resp_far", owner="o"))["status"] == "failed"
        # the far replica's own update can no longer bring the job back
        assert await other.update_response(response("resp_far"), owner="o") is False
    finally:
        await other.close()


async def set_replica_host(store: Any, store_spec: str, replica_id: str, host: str, *, age: float) -> None:
    if store_spec.startswith("sqlite"):
        import time

        def write(conn: Any) -> None:
            conn.execute(
                "UPDATE replicas SET host = ?, heartbeat_at = ? WHERE replica_id = ?", (host, time.time() - age, replica_id)
            )

        await store._write(write)
    else:
        async with store.pool.acquire() as conn:
            await conn.execute(
                "UPDATE replicas SET host = $2, heartbeat_at = extract(epoch from clock_timestamp()) - $3 "
                "WHERE replica_id = $1",
                replica_id,
                host,
                age,
            )


@durable_engines
async def test_jobs_stored_by_an_unregistered_predecessor_end_at_the_next_start(store_spec: str) -> None:
    """A file (or schema) from before replicas were recorded, or a process that never registered:
    its running jobs have no owner replica and end at the next start."""
    first = open_store(store_spec)
    await first.open()
    await first.put(response("resp_old", status="in_progress", background=True), [], owner="o")
    await first.close()
    second = open_store(store_spec)
    await second.open()
    try:
        assert await second.recover_orphans("replica-new") == ["resp_old"]
        # and the new replica's own jobs are never taken for orphans
        await second.put(response("resp_new", status="in_progress", background=True), [], owner="o")
        assert await second.recover_orphans("replica-new") == []
    finally:
        await second.close()


async def test_memory_store_recovers_jobs_of_replicas_it_no_longer_hears_from() -> None:
    store = MemoryStore()
    await store.register_replica("r1")
    await store.put(response("resp_m", status="in_progress", background=True), [], owner=None)
    store._replicas["r1"] = ("another-machine", 1, 0.0)  # r1's last heartbeat: long ago
    await store.register_replica("r2")
    assert await store.recover_orphans("r2", stale_after=30) == ["resp_m"]
    assert (await store.get("resp_m", owner=None))["error"]["code"] == "server_restarted"
    events = await store.events("resp_m", after=None)
    assert [e["type"] for e in events] == ["response.failed"]


async def test_a_restarted_container_reusing_the_pid_is_a_predecessor(tmp_path: Any) -> None:
    """Same machine, same pid (pid 1 in a container), another replica id: that was our predecessor."""
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    await store.open()
    try:
        await store.register_replica("before-restart")
        await store.put(response("resp_c", status="in_progress", background=True), [], owner=None)
        assert await store.recover_orphans("after-restart", stale_after=30) == ["resp_c"]
    finally:
        await store.close()


async def test_run_heartbeat_renews_and_recovers_while_running(tmp_path: Any) -> None:
    from server.store import run_heartbeat

    store = open_store(f"sqlite:///{tmp_path}/store.db")
    await store.open()
    try:
        await store.register_replica("old")
        await store.put(response("resp_h", status="in_progress", background=True), [], owner=None)
        await store._write(lambda conn: conn.execute("UPDATE replicas SET host = 'far', heartbeat_at = 0"))
        beats = asyncio.create_task(run_heartbeat(store, "live", every_seconds=0.05, recover_after=30))
        try:
            for _ in range(200):
                if (await store.get("resp_h", owner=None))["status"] == "failed":
                    break
                await asyncio.sleep(0.02)
        finally:
            beats.cancel()
        assert (await store.get("resp_h", owner=None))["error"]["code"] == "server_restarted"
        rows = await store._run(lambda: store._db().execute("SELECT replica_id, heartbeat_at FROM replicas").fetchall())
        assert {r[0] for r in rows} == {"old", "live"}
        assert dict(rows)["live"] > 0
    finally:
        await store.close()


def test_a_predecessor_that_is_a_zombie_is_gone() -> None:
    """A killed worker its supervisor has not reaped yet still answers signal 0; it is dead all the
    same, so its jobs are recovered (and the metrics of server/metrics_process.py mark it dead too:
    both use `pid_alive`)."""
    from server.stores.common import pid_alive, replica_gone, this_host

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped: a zombie
        assert pid_alive(sleeper.pid) and not replica_gone(this_host(), sleeper.pid, 0.0, 60.0)
        assert not pid_alive(zombie.pid), "an unreaped dead process counted as running"
        assert replica_gone(this_host(), zombie.pid, 0.0, 60.0)
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()
    assert not pid_alive(zombie.pid)  # reaped: no such process
