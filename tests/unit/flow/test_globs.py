"""Gitignore-style globs: ** at any depth, unanchored names, directories, negation."""

from __future__ import annotations

import pytest

from loops import errors
from loops.flow.globs import compile_pattern, compile_patterns, matches

CASES = [
    (["tests/**"], "tests/test_a.py", True),
    (["tests/**"], "tests/unit/deep/test_b.py", True),
    (["tests/**"], "src/tests.py", False),
    (["tests"], "pkg/tests/test_a.py", True),
    (["/tests"], "pkg/tests/test_a.py", False),
    (["*.py"], "a/b/c.py", True),
    (["*.py"], "a/b/c.pyc", False),
    (["test_*.py"], "test_calc.py", True),
    (["src/*.py"], "src/a.py", True),
    (["src/*.py"], "src/sub/a.py", False),
    (["src/**/*.py"], "src/a.py", True),
    (["src/**/*.py"], "src/x/y/a.py", True),
    (["**/fixtures/"], "a/fixtures/data.json", True),
    (["file?.txt"], "file1.txt", True),
    (["file[0-9].txt"], "file7.txt", True),
    (["file[!0-9].txt"], "file7.txt", False),
    (["tests/**", "!tests/snapshots/**"], "tests/snapshots/a.txt", False),
    (["tests/**", "!tests/snapshots/**"], "tests/test_a.py", True),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), CASES)
def test_matching(patterns: list[str], path: str, expected: bool):
    assert matches(compile_patterns(patterns), path) is expected


def test_empty_pattern_is_a_construction_error():
    with pytest.raises(errors.ConstructionError, match="empty"):
        compile_pattern("  ")
