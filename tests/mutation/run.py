"""A small, fixed mutation check: apply each deliberate one-line bug of `tests/mutation/mutants.py`,
run the tests that must catch it, and fail if any mutant survives.

    python tests/mutation/run.py            # all mutants
    python tests/mutation/run.py -k store   # those whose name contains "store"
    python tests/mutation/run.py --list

Why our own script and not mutmut or cosmic-ray: those generate hundreds of mutants per module and
need a full test run per mutant (or a coverage map to pick tests), which does not fit a CI budget of
a few minutes on two cores; their mutants also vary with the tool's version. A fixed, reviewed list
of bugs that matter (each one a mistake this project could plausibly make), each checked by the
named test files only, is deterministic, takes ~2 minutes, and says exactly which test guards which
behaviour. The list grows by one entry for each real bug found.

Rules: an original snippet must occur exactly once in its file (else the run fails: the list has
rotted); a mutant is killed when its tests fail (pytest exit status 1); the file is always restored,
even on Ctrl-C or SIGTERM, and a restore is checked byte for byte.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.mutation.mutants import MUTANTS, Mutant  # noqa: E402

TIMEOUT = 180.0  # seconds per mutant: a mutant that hangs the tests counts as killed only if they fail


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(mutant: Mutant) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'missing' | 'error', seconds, detail). The file is restored on return."""
    path = ROOT / mutant.path
    original = path.read_bytes()
    text = original.decode()
    count = text.count(mutant.original)
    if count != 1:
        return "missing", 0.0, f"snippet found {count} times in {mutant.path}"
    started = time.monotonic()
    try:
        path.write_text(text.replace(mutant.original, mutant.replacement, 1))
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               *mutant.tests]
        if mutant.select:
            cmd += ["-k", mutant.select]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                                  env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except subprocess.TimeoutExpired:
            return "error", time.monotonic() - started, f"tests did not finish in {TIMEOUT:.0f}s"
    finally:
        path.write_bytes(original)
        if path.read_bytes() != original:  # pragma: no cover - the disk lied
            raise SystemExit(f"could not restore {mutant.path}")
    elapsed = time.monotonic() - started
    lines = proc.stdout.strip().splitlines()
    tail = next((line for line in lines if line.startswith(("FAILED ", "ERROR tests/"))), lines[-1] if lines else "")
    if proc.returncode == 1:
        return "killed", elapsed, tail
    if proc.returncode == 0:
        return "survived", elapsed, tail
    # 2: interrupted/collection error, 4: usage, 5: no tests selected: the check itself is broken
    return "error", elapsed, f"pytest exit {proc.returncode}: {tail or proc.stderr.strip()[-300:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="match", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.match or args.match in m.name]
    if args.list:
        for m in mutants:
            print(f"{m.name}  [{m.path}]  -> {' '.join(m.tests)}" + (f" -k {m.select!r}" if m.select else ""))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    bad = 0
    started = time.monotonic()
    for mutant in mutants:
        outcome, seconds, detail = run_one(mutant)
        bad += outcome != "killed"
        print(f"{outcome:8} {seconds:6.1f}s  {mutant.name}  [{mutant.path}]  {detail}", flush=True)
    print(f"{len(mutants) - bad}/{len(mutants)} mutants killed in {time.monotonic() - started:.0f}s", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
