"""Run the test llama-server by hand, for checks that are not pytest tests.

`python -m tests.support.llamacpp.serve [--port-file PATH]` starts the cached build's llama-server
(the same command line as the tests, tests/support/llamacpp/launcher.py) on a free loopback port,
prints its base URL (ending in `/v1`) on one line, writes it to `--port-file` if given, and serves
until interrupted (Ctrl-C or SIGTERM). Used for the Open Responses compliance suite against the
bridge in front of a real backend (tests/support/openresponses/README.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.support.llamacpp.launcher import find_build, run_llama_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, help="also write the base URL to this file")
    args = parser.parse_args(argv)
    build = find_build()
    if build is None:
        print("llama.cpp is not built: run tests/support/llamacpp/build.sh", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with run_llama_server(build, Path(tempfile.mkdtemp(prefix="llama-server-"))) as server:
        print(server.url, flush=True)
        if args.port_file is not None:
            args.port_file.write_text(server.url + "\n", encoding="utf-8")
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
