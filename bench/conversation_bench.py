"""Per-turn cost of a response on a conversation of 10, 1,000 and 10,000 items, per store engine.

    python bench/conversation_bench.py                         # SQLite and PostgreSQL, 10 / 1k / 10k items
    python bench/conversation_bench.py --engines sqlite --sizes 10 10000 --turns 5

For each engine and size, a conversation of N items (user and assistant messages of ~120 bytes,
every tenth pair a tool call and its output) is created, then:

* `load`: `all_conversation_items` (what a turn prepends: one indexed read), median ms;
* `append`: `put(response, input, conversation_id=)` (store the response and append its items in one
  transaction), median ms: this is the part that must not grow with N;
* `translate`: `responses_to_chat_request` on the N items + the new input, median ms;
* `turn`: a whole non-streaming `POST /v1/responses` with `conversation` through a real uvicorn
  bridge in front of the in-process fixture backend (which parses all N messages too), median ms;
* `turn auto`: the same with `truncation: "auto"` and `context_window = 8192` on the upstream, so
  only what fits is translated and sent (the store still loads and keeps everything).

The machine this runs on may be shared: figures are medians of a few runs, for orders of magnitude
and for the flatness of `append`, not for absolute comparisons. PostgreSQL runs in a schema of its own
on ``--postgres`` (dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def history(n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    i = 0
    while len(items) < n:
        if i % 10 == 9 and len(items) + 2 <= n:
            call_id = f"call_{i}"
            items.append({"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": '{"k": 1}'})
            items.append({"type": "function_call_output", "call_id": call_id, "output": "result " * 10})
        elif i % 2 == 0:
            items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"turn {i} " + "q" * 100}]})
        else:
            items.append({"type": "message", "role": "assistant",
                          "content": [{"type": "output_text", "text": f"answer {i} " + "a" * 100, "annotations": []}]})  # fmt: skip
        i += 1
    return items[:n]


def a_response(conversation_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rid = f"resp_{uuid.uuid4().hex}"
    response = {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": "completed", "model": "m",
        "conversation": {"id": conversation_id},
        "output": [{"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "x" * 300, "annotations": []}]}],
    }  # fmt: skip
    items = [{"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "y" * 100}]}]  # fmt: skip
    return response, items


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def store_figures(spec: str, sizes: list[int], repeats: int) -> dict[int, dict[str, float]]:
    import translator
    from server.store import open_store

    store = open_store(spec)
    await store.open()
    out: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            conversation_id = f"conv_bench_{uuid.uuid4().hex[:12]}"
            await store.create_conversation({"id": conversation_id, "created_at": time.time(), "metadata": {}},
                                            history(n), owner=None)  # fmt: skip
            loads, appends, translations = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                items = await store.all_conversation_items(conversation_id, owner=None)
                loads.append(time.perf_counter() - t0)
                request = {"model": "m", "input": [*items, {"role": "user", "content": "next"}]}
                t0 = time.perf_counter()
                translator.responses_to_chat_request(request)
                translations.append(time.perf_counter() - t0)
                response, inputs = a_response(conversation_id)
                t0 = time.perf_counter()
                await store.put(response, inputs, owner=None, conversation_id=conversation_id)
                appends.append(time.perf_counter() - t0)
            out[n] = {"load": median_ms(loads), "append": median_ms(appends), "translate": median_ms(translations)}
    finally:
        await store.close()
    return out


def turn_figures(spec: str, sizes: list[int], turns: int) -> dict[int, dict[str, float]]:
    import dataclasses

    import httpx
    from tests.servers import run_app

    from fixtures.backend import create_app as backend_app
    from server.app import create_app
    from server.config import BridgeConfig, Upstream

    out: dict[int, dict[str, float]] = {}
    with run_app(backend_app()) as backend:
        upstream = Upstream(name="fixture", base_url=backend.url + "/v1")
        for label, up in (("turn", upstream), ("turn auto", dataclasses.replace(upstream, context_window=8192))):
            app = create_app(BridgeConfig(upstreams=(up,), store=spec))
            with run_app(app) as bridge, httpx.Client(base_url=bridge.url, timeout=120) as http:
                for n in sizes:
                    conv = http.post("/v1/conversations").json()["id"]
                    items = history(n)
                    for start in range(0, n, 20):
                        http.post(f"/v1/conversations/{conv}/items", json={"items": items[start : start + 20]})
                    samples = []
                    body: dict[str, Any] = {"model": "fixture-scripted", "input": "@text ok", "conversation": conv}
                    if label == "turn auto":
                        body["truncation"] = "auto"
                    for _ in range(turns):
                        t0 = time.perf_counter()
                        answer = http.post("/v1/responses", json=body)
                        samples.append(time.perf_counter() - t0)
                        assert answer.status_code == 200, answer.text
                    out.setdefault(n, {})[label] = median_ms(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=15, help="store operations per size (median)")
    parser.add_argument("--turns", type=int, default=5, help="whole turns per size (median)")
    parser.add_argument("--postgres", default=PG_URL)
    args = parser.parse_args()

    print("| engine | items | load ms | append ms | translate ms | turn ms | turn ms (truncation auto, 8k window) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine in args.engines:
        schema = None
        with tempfile.TemporaryDirectory() as tmp:
            if engine == "sqlite":
                spec = f"sqlite:///{tmp}/bench.db"
            elif engine == "postgresql":
                schema = f"rb_convbench_{uuid.uuid4().hex[:8]}"
                spec = f"{args.postgres}?schema={schema}"
            else:
                spec = engine
            try:
                stores = asyncio.run(store_figures(spec, args.sizes, args.repeats))
                turns = turn_figures(spec, args.sizes, args.turns)
            finally:
                if schema is not None:
                    asyncio.run(_drop(args.postgres, schema))
            for n in args.sizes:
                s, t = stores[n], turns[n]
                print(f"| {engine} | {n:,} | {s['load']:.2f} | {s['append']:.2f} | {s['translate']:.2f} | "
                      f"{t['turn']:.1f} | {t['turn auto']:.1f} |", flush=True)  # fmt: skip


async def _drop(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
