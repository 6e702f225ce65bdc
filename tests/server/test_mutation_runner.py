"""The mutation check's own guarantees (tests/mutation/run.py): every listed snippet is still in its
file exactly once, a mutated file is restored however the run ends, and a missing snippet is a failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.mutation import run
from tests.mutation.mutants import MUTANTS, Mutant


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_snippet_is_in_its_file_once(mutant: Mutant) -> None:
    assert (run.ROOT / mutant.path).read_text().count(mutant.original) == 1
    assert mutant.original != mutant.replacement
    for test in mutant.tests:
        assert (run.ROOT / test).is_file(), test


def test_the_file_is_restored_when_the_run_is_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "code.py"
    target.write_text("x = 1\n")
    seen: list[str] = []

    def interrupted(*args: object, **kwargs: object) -> None:
        seen.append(target.read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.run_one(Mutant("m", "code.py", "x = 1", "x = 2", ("t.py",)))
    assert seen == ["x = 2\n"] and target.read_text() == "x = 1\n"


def test_a_snippet_no_longer_found_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "code.py").write_text("y = 1\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    outcome, _, detail = run.run_one(Mutant("m", "code.py", "x = 1", "x = 2", ("t.py",)))
    assert (outcome, detail) == ("missing", "snippet found 0 times in code.py")
