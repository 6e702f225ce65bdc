"""Random ids (`translator.events.random_hex`): the shapes, no repeats across threads, and a forked
child never handed the bytes its parent buffered."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from translator import ChatStreamTranslator
from translator.events import _ENTROPY, random_hex


def test_shapes_of_the_ids_made() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", random_hex())
    assert re.fullmatch(r"[0-9a-f]{24}", random_hex(12))
    assert re.fullmatch(r"[0-9a-f]{10000}", random_hex(5000))  # more than one buffer at once
    assert re.fullmatch(r"resp_[0-9a-f]{32}", ChatStreamTranslator({"model": "m"}).id)


def test_no_id_repeats_across_threads_and_buffer_refills() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(3000):  # 8 x 3000 x 16 bytes: many 4 KiB refills, raced by 8 threads
            out.append(random_hex())

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 24000


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    random_hex()  # the parent now holds a buffer with bytes left in it
    assert _ENTROPY.buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would make next
        os.close(read)
        os.write(write, random_hex().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_hex()  # the parent's next id, from the buffer the child would have copied
