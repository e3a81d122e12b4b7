"""The code stays ruff- and mypy-clean: CI fails otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    """ruff check reports nothing over the whole repository."""
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) reports nothing on the package, the
    tests and the benchmarks."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


INVARIANTS_DOC = REPO / "docs" / "invariants.md"
TEST_REF = re.compile(r"`((?:[\w-]+/)*[\w-]+\.py)(?:::(\w+))?`")
CHECKER_REF = re.compile(r"`(assert_\w+)`")


def _test_file(ref: str) -> Path:
    """The one file under tests/ (or, for a mechanism, dialer/) whose path ends with `ref`."""
    ref = ref.removeprefix("tests/")
    found = [
        p
        for root in ("tests", "dialer")
        for p in (REPO / root).rglob(Path(ref).name)
        if p.as_posix().endswith("/" + ref)
    ]
    assert len(found) == 1, f"docs/invariants.md names `{ref}`: {len(found)} files match"
    return found[0]


def test_invariants_doc_names_tests_and_checkers_that_exist() -> None:
    """Every test file, test and checker docs/invariants.md names exists (a moved or
    renamed test must be renamed there too)."""
    text = INVARIANTS_DOC.read_text()
    refs = TEST_REF.findall(text)
    assert refs, "docs/invariants.md names no test"
    for path, name in refs:
        source = _test_file(path).read_text()
        if name:
            assert re.search(rf"\bdef {name}\(", source), f"docs/invariants.md: {path}::{name} does not exist"
    checkers = (REPO / "tests" / "invariants.py").read_text()
    for name in CHECKER_REF.findall(text):
        assert re.search(rf"\bdef {name}\(", checkers), f"docs/invariants.md: tests/invariants.py has no {name}"
