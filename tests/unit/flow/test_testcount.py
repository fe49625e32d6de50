"""Reading test counts from runners' summaries, so zero tests is never a silent pass."""

from __future__ import annotations

import pytest

from loops.flow.testcount import count_tests

CASES = [
    ("pytest", "....\n4 passed in 0.12s\n", 4, 0),
    ("pytest", "==== 3 passed, 1 failed, 2 skipped in 1.20s ====\n", 3, 1),
    ("pytest", "== 1 failed, 2 passed, 1 error in 0.5s (0:00:00) ==\n", 2, 2),
    ("pytest", "\n==== no tests ran in 0.01s ====\n", 0, 0),
    ("pytest", "\x1b[32m5 passed\x1b[0m\x1b[32m in 0.03s\x1b[0m\n", 5, 0),
    (
        "cargo test",
        "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out;\n"
        "test result: ok. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out;\n",
        5,
        1,
    ),
    (
        "jest",
        "Test Suites: 1 passed, 1 total\nTests:       1 failed, 1 skipped, 4 passed, 6 total\n",
        4,
        1,
    ),
    ("vitest", " Test Files  1 passed (1)\n      Tests  1 failed | 3 passed (4)\n", 3, 1),
    ("vitest", "No test files found, exiting with code 1\n", 0, 0),
    ("node --test", "TAP version 13\n# tests 5\n# suites 0\n# pass 4\n# fail 1\n", 4, 1),
    ("node --test", "\u2139 tests 2\n\u2139 suites 0\n\u2139 pass 2\n\u2139 fail 0\n", 2, 0),
    (
        "go test",
        "=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n    --- PASS: TestB/x (0.00s)\n"
        "--- FAIL: TestC (0.00s)\nFAIL\n",
        2,
        1,
    ),
    (
        "go test",
        '{"Action":"run","Test":"TestA"}\n{"Action":"pass","Test":"TestA"}\n'
        '{"Action":"pass","Package":"x"}\n',
        1,
        0,
    ),
    (
        "go test",
        "ok  \texample.com/x\t0.01s [no tests to run]\n?   \texample.com/y\t[no test files]\n",
        0,
        0,
    ),
]


@pytest.mark.parametrize(("runner", "output", "passed", "failed"), CASES)
def test_summaries_are_read(runner: str, output: str, passed: int, failed: int):
    count = count_tests(output)
    assert count is not None
    assert (count.runner, count.passed, count.failed) == (runner, passed, failed)


@pytest.mark.parametrize(
    "output",
    ["", "ok  \texample.com/x\t0.01s\n", "all good\n", "Build succeeded.\n"],
)
def test_unknown_or_countless_output_is_unreadable(output: str):
    assert count_tests(output) is None
