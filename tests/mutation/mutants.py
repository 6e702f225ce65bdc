"""The fixed list of deliberate one-line bugs `tests/mutation/run.py` applies, one at a time.

Each entry: the file, the exact original text (it must occur exactly once, so the list cannot
silently rot when the code changes: a missing snippet fails the run), its replacement, the test
files that must catch it, and optionally a pytest `-k` expression to keep the run short. Add an
entry for each bug found, with the test that caught it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    select: str | None = None  # pytest -k


MUTANTS: tuple[Mutant, ...] = (
    # ---------------------------------------------------------------------------- translator
    Mutant("content_filter reported as max_output_tokens", "translator/stream.py",
           'status, details = "incomplete", {"reason": "content_filter"}',
           'status, details = "incomplete", {"reason": "max_output_tokens"}',
           ("tests/translator/test_translator_whole.py", "tests/translator/test_translator_properties.py")),
    Mutant("parallel_tool_calls echoed inverted", "translator/events.py",
           '"parallel_tool_calls": True, "text": None,',
           '"parallel_tool_calls": False, "text": None,',
           ("tests/translator/test_translator_whole.py",)),
    Mutant("output tokens counted from the prompt", "translator/events.py",
           '"output_tokens": completion,', '"output_tokens": prompt,',
           ("tests/translator/test_translator_whole.py",)),
    Mutant("a text delta that says something else", "translator/builders.py",
           "self.em.emit(OUTPUT_TEXT_DELTA, **self._where(), delta=text, logprobs=logprobs or [])",
           "self.em.emit(OUTPUT_TEXT_DELTA, **self._where(), delta=text[::-1], logprobs=logprobs or [])",
           ("tests/translator/test_stream_check.py", "tests/translator/test_translator_stream.py")),
    Mutant("the first argument fragment lost from the final call", "translator/builders.py",
           '"arguments": "".join(self.args) or "{}"}', '"arguments": "".join(self.args[1:]) or "{}"}',
           ("tests/translator/test_translator_whole.py", "tests/translator/test_translator_stream.py")),
    Mutant("a whole answer's calls merged into one", "translator/responses.py",
           '[{**call, "index": i} if isinstance(call, dict)', '[{**call, "index": 0} if isinstance(call, dict)',
           ("tests/translator/test_translator_whole.py",)),
    Mutant("a prefix of <think> dropped at the end", "translator/stream.py",
           "elif self._think == _T_UNDECIDED and self._think_buf.strip():", "elif False:",
           ("tests/translator/test_translator_stream.py",), "looks_like"),
    Mutant("parallel_tool_calls forwarded inverted", "translator/requests.py",
           'out["parallel_tool_calls"] = bool(request["parallel_tool_calls"])',
           'out["parallel_tool_calls"] = not bool(request["parallel_tool_calls"])',
           ("tests/translator/test_translator_requests.py",)),
    # ---------------------------------------------------------------------------------- pump
    Mutant("the last frame without a blank line not flushed", "server/pump.py",
           "for _name, data in decoder.close():", "for _name, data in []:",
           ("tests/server/test_server_stream.py",), "blank_line"),
    Mutant("data writes do not reset the keep-alive timer", "server/streaming.py",
           '                    self._last_write = loop.time()\n'
           '                    await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})',
           '                    await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})',
           ("tests/server/test_server_stream.py",), "keepalive"),
    Mutant("completed released although the store write failed", "server/pump.py",
           "return [*batch[:-1], store_unavailable(terminal)]", "return batch",
           ("tests/server/test_server_pump.py",), "pump_commit"),
    Mutant("a chunk that is not an object passed to the translator", "server/pump.py",
           "if not isinstance(chunk, dict):\n                what", "if chunk is None:\n                what",
           ("tests/server/test_server_pump.py",), "not_an_object"),
    Mutant("no [DONE] after the terminal event", "server/streaming.py",
           "frames.append(DONE_FRAME)", "pass",
           ("tests/server/test_server_stream.py",), "framing"),
    # ----------------------------------------------------------------------- background + stores
    Mutant("a final write refused by a cancel is released anyway", "server/pump.py",
           "return None if kept is False else batch", "return batch",
           ("tests/server/test_background_jobs.py",)),
    Mutant("a store error kills the cancel watcher", "server/background.py",
           "except Exception:  # a database hiccup must not kill the job",
           "except ValueError:  # a database hiccup must not kill the job",
           ("tests/server/test_background_jobs.py",), "watcher"),
    Mutant("memory store overwrites a cancelled response", "server/stores/memory.py",
           'if record is None or record.cancel_requested or loads(record.response).get("status") == "cancelled":\n            return False',
           "if record is None:\n            return False",
           ("tests/server/test_store.py",), "cancel_and_update and memory"),
    Mutant("SQLite store overwrites a cancelled response", "server/stores/sqlite_responses.py",
           'if row is None or row[0] or row[1] == "cancelled":', "if row is None:",
           ("tests/server/test_store.py",), "cancel_and_update and sqlite"),
    Mutant("SQLite batched put keeps the items of the response it replaces", "server/stores/sqlite_engine.py",
           "    DELETE FROM items WHERE response_id IN (SELECT value FROM json_each(NEW.payload, '$[0]'));\n",
           "",
           ("tests/server/store/test_store_writes.py",), "group_of_puts and sqlite"),
    Mutant("SQLite batched put writes the same id twice in one statement", "server/stores/sqlite_responses.py",
           "        if rows.response_id in seen:", "        if False:",
           ("tests/server/store/test_store_writes.py",), "group_of_puts and sqlite"),
    Mutant("PostgreSQL group put keeps the old items of the response it replaces", "server/stores/postgres_schema.py",
           "      AND NOT EXISTS (SELECT 1 FROM new_items AS n WHERE n.response_id = old.response_id AND n.position = old.position)",
           "      AND FALSE",
           ("tests/server/store/test_store_writes.py",), "postgres_group"),
    Mutant("PostgreSQL group put keeps the earlier put of an id", "server/stores/postgres_engine.py",
           "            latest[j.rows.response_id] = j", "            latest.setdefault(j.rows.response_id, j)",
           ("tests/server/store/test_store_writes.py",), "postgres_group"),
    Mutant("memory store replays the event at starting_after", "server/stores/memory.py",
           "if after is None or n > after]", "if after is None or n >= after]",
           ("tests/server/test_store.py",), "events_are_ordered and memory"),
)
