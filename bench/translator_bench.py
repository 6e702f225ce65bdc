"""Throughput of the translation hot path, beside a JSON-only baseline measured in the same run.

For three 512-chunk chat streams (plain text, reasoning then text, a tool call with its arguments
streamed) it runs the full per-chunk path the server runs: `SSEDecoder.feed` on the upstream bytes,
`orjson.loads`, `ChatStreamTranslator.feed`, `encode_sse` of every event produced. The baseline
does only `orjson.loads` + `orjson.dumps` on the same chunk payloads: the least any proxy that
parses and re-serialises each chunk must do. The target is a ratio within 2x.

Not a timed test: run it by hand, ``python bench/translator_bench.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from translator import ChatStreamTranslator, SSEDecoder, encode_sse

N_CHUNKS = 512
READ_SIZE = 4096  # bytes per simulated network read


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]


def text_stream() -> list[dict]:
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"content": WORDS[i % len(WORDS)]}) for i in range(N_CHUNKS - 3)]
    chunks.append(_chunk({}, "stop"))
    chunks.append({**_chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 509,
                                                          "total_tokens": 518}})
    return chunks


def reasoning_stream() -> list[dict]:
    half = (N_CHUNKS - 3) // 2
    chunks = [_chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    chunks += [_chunk({"content": None, "reasoning_content": WORDS[i % len(WORDS)]}) for i in range(half)]
    chunks += [_chunk({"content": WORDS[i % len(WORDS)], "reasoning_content": None})
               for i in range(N_CHUNKS - 3 - half)]
    chunks.append(_chunk({}, "stop"))
    chunks.append({**_chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 509,
                                                          "total_tokens": 518}})
    return chunks


def tool_stream() -> list[dict]:
    chunks = [_chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_bench", "type": "function", "function": {"name": "write_file", "arguments": ""}}]})]
    chunks.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"content": "'}}]}))
    chunks += [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": WORDS[i % len(WORDS)]}}]})
               for i in range(N_CHUNKS - 5)]
    chunks.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}))
    chunks.append(_chunk({}, "tool_calls"))
    chunks.append({**_chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 509,
                                                          "total_tokens": 518}})
    return chunks


REQUEST = {
    "model": "bench-model",
    "input": "go",
    "stream": True,
    "tools": [{"type": "function", "name": "write_file", "parameters": {"type": "object", "properties": {}}}],
}


def to_sse(chunks: list[dict]) -> list[bytes]:
    """The upstream bytes, cut into fixed-size network reads (frames split anywhere)."""
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return [raw[i : i + READ_SIZE] for i in range(0, len(raw), READ_SIZE)]


def run_translator(reads: list[bytes]) -> int:
    decoder = SSEDecoder()
    tr = ChatStreamTranslator(REQUEST)
    loads = orjson.loads
    out = 0
    for event in tr.start():
        out += len(encode_sse(event))
    for read in reads:
        for _name, data in decoder.feed(read):
            if data == "[DONE]":
                continue
            for event in tr.feed(loads(data)):
                out += len(encode_sse(event))
    for event in tr.finish():
        out += len(encode_sse(event))
    return out


def run_baseline(payloads: list[str]) -> int:
    loads, dumps = orjson.loads, orjson.dumps
    out = 0
    for data in payloads:
        out += len(dumps(loads(data)))
    return out


def best_rates(fns: list[Callable[[], int]], rounds: int) -> list[float]:
    """Chunks per second of each function, best of ``rounds``.

    The functions run interleaved, round after round, so a burst of load on a shared machine hits
    the translator and the baseline alike; the best round is the least disturbed one.
    """
    best = [float("inf")] * len(fns)
    clock = time.perf_counter
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            best[i] = min(best[i], clock() - start)
    return [N_CHUNKS / b for b in best]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"{'stream':<10} {'translator chunks/s':>20} {'baseline chunks/s':>18} {'ratio':>7}")
    worst = 0.0
    for name, make in (("text", text_stream), ("reasoning", reasoning_stream), ("tool_call", tool_stream)):
        chunks = make()
        assert len(chunks) == N_CHUNKS, len(chunks)
        reads = to_sse(chunks)
        payloads = [orjson.dumps(c).decode() for c in chunks]
        run_translator(reads)  # warm up
        translator_rate, baseline_rate = best_rates(
            [lambda reads=reads: run_translator(reads), lambda payloads=payloads: run_baseline(payloads)], args.rounds
        )
        ratio = baseline_rate / translator_rate
        worst = max(worst, ratio)
        print(f"{name:<10} {translator_rate:>20,.0f} {baseline_rate:>18,.0f} {ratio:>6.2f}x")
    print(f"worst ratio {worst:.2f}x (target: within 2x of the baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
