"""Read how many tests ran from a test runner's output (pure functions, no I/O).

Used by ``command_succeeds(min_tests=...)`` so that a test command which ran zero
tests (a wrong path, a deleted suite, a filter that matches nothing) is not a pass.
Known runners: pytest, go test (``-v`` or ``-json``), cargo test, jest, vitest, and
node's built-in test runner (TAP and spec reporters).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

#: the runners whose summaries :func:`count_tests` reads, for messages
KNOWN_RUNNERS = "pytest, go test -v/-json, cargo test, jest, vitest, node --test"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclasses.dataclass(frozen=True, slots=True)
class TestCount:
    """Tests counted in one run's output.

    Attributes:
        runner: which runner's summary was read.
        passed: tests that passed.
        failed: tests that failed or errored.
    """

    __test__ = False  # not a pytest test class, despite the name

    runner: str
    passed: int
    failed: int = 0


def _ints(pattern: str, text: str) -> list[int]:
    return [int(m) for m in re.findall(pattern, text)]


def _cargo(text: str) -> TestCount | None:
    lines = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text)
    if not lines:
        return None
    return TestCount("cargo test", sum(int(p) for p, _ in lines), sum(int(f) for _, f in lines))


def _jest(text: str) -> TestCount | None:
    lines = re.findall(r"^Tests:\s+(.*\d+ total)\s*$", text, re.MULTILINE)
    if not lines:
        return None
    last = lines[-1]
    passed = _ints(r"(\d+) passed", last)
    failed = _ints(r"(\d+) failed", last)
    return TestCount("jest", sum(passed), sum(failed))


def _vitest(text: str) -> TestCount | None:
    lines = re.findall(r"^\s*Tests\s+(.*\(\d+\))\s*$", text, re.MULTILINE)
    if not lines:
        if re.search(r"^\s*No test files found", text, re.MULTILINE):
            return TestCount("vitest", 0)
        return None
    last = lines[-1]
    return TestCount("vitest", sum(_ints(r"(\d+) passed", last)), sum(_ints(r"(\d+) failed", last)))


def _node(text: str) -> TestCount | None:
    passed = re.findall(r"^[#\u2139] pass (\d+)\s*$", text, re.MULTILINE)
    if not passed or not re.search(r"^[#\u2139] tests \d+\s*$", text, re.MULTILINE):
        return None
    failed = re.findall(r"^[#\u2139] fail (\d+)\s*$", text, re.MULTILINE)
    return TestCount("node --test", int(passed[-1]), int(failed[-1]) if failed else 0)


def _go_json(text: str) -> TestCount | None:
    passed = failed = 0
    seen = False
    for line in text.splitlines():
        if not line.startswith("{") or '"Action"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        seen = True
        if record.get("Test"):
            if record.get("Action") == "pass":
                passed += 1
            elif record.get("Action") == "fail":
                failed += 1
    return TestCount("go test", passed, failed) if seen else None


def _go_verbose(text: str) -> TestCount | None:
    passed = len(re.findall(r"^\s*--- PASS: ", text, re.MULTILINE))
    failed = len(re.findall(r"^\s*--- FAIL: ", text, re.MULTILINE))
    if passed or failed:
        return TestCount("go test", passed, failed)
    results = re.findall(r"^(ok|FAIL|\?)\s+\S+.*$", text, re.MULTILINE)
    if (
        results
        and all(
            "[no test files]" in line or "[no tests to run]" in line
            for line in re.findall(r"^(?:ok|\?)\s+\S+.*$", text, re.MULTILINE)
        )
        and not re.search(r"^FAIL", text, re.MULTILINE)
    ):
        return TestCount("go test", 0)
    return None


_PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ \w+(?:, )?)+|no tests ran)(?: in [\d.]+s)?(?: \([^)]*\))?\s*=*\s*$",
    re.MULTILINE,
)


def _pytest(text: str) -> TestCount | None:
    found = [
        m
        for m in _PYTEST_SUMMARY.finditer(text)
        if re.search(r"passed|failed|error|no tests ran|skipped|deselected", m.group(1))
    ]
    if not found:
        return None
    summary = found[-1].group(1)
    passed = _ints(r"(\d+) passed", summary)
    failed = _ints(r"(\d+) (?:failed|errors?)", summary)
    return TestCount("pytest", sum(passed), sum(failed))


_READERS: tuple[Callable[[str], TestCount | None], ...] = (
    _cargo,
    _jest,
    _vitest,
    _node,
    _go_json,
    _go_verbose,
    _pytest,
)


def count_tests(output: str) -> TestCount | None:
    """The tests counted from a runner's summary in ``output``, or ``None`` when unreadable.

    Args:
        output: the command's combined stdout and stderr.

    Returns:
        The first runner summary recognised (ANSI colours are ignored), or ``None`` when
        no known summary is present (e.g. ``go test`` without ``-v``).
    """
    text = _ANSI.sub("", output)
    for reader in _READERS:
        count = reader(text)
        if count is not None:
            return count
    return None
