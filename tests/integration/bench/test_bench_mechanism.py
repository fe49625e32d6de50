"""The offline loop-mechanism harness: what each design's gates catch (behaviour, not speed).

Runs ``bench/mechanism`` with the scripted mock agents and checks the qualitative results
that must hold: the fully gated designs never say "done" when the hidden check fails,
the lone judge is fooled by the liar, and memory (git grounding, one long session)
converges where a fresh context repeats its half fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run_harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mechanism"), *args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = run_harness("--engine", "mock", "--json", "--seed", "7")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def design(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in report["designs"] if row["design"] == name)


def trial(report: dict[str, Any], design_name: str, task: str) -> dict[str, Any]:
    return next(t for t in report["trials"] if t["design"] == design_name and t["task"] == task)


def test_gated_designs_never_say_done_falsely(report: dict[str, Any]) -> None:
    for name in ("gated", "gated-grounded", "gated-session"):
        row = design(report, name)
        assert row["false_dones"] == 0, row
        assert row["trials"] == 7


def test_lone_judge_is_fooled_by_the_liar_and_the_cheaters(report: dict[str, Any]) -> None:
    liar = trial(report, "lone-judge", "slugify")
    assert liar["loop_passed"] and not liar["hidden_passed"] and liar["false_done"]
    assert set(design(report, "lone-judge")["false_done_tasks"]) >= {
        "slugify",
        "wordcount",
        "duration",
        "leapyear",
    }
    # the gated design catches the same liar and converges once shown the failure
    gated_liar = trial(report, "gated", "slugify")
    assert gated_liar["loop_passed"] and gated_liar["hidden_passed"]
    assert gated_liar["iterations"] >= 2


def test_exit_status_alone_is_fooled_by_edited_and_unrun_tests(report: dict[str, Any]) -> None:
    assert set(design(report, "tests-judge")["false_done_tasks"]) == {"duration", "leapyear"}
    for task in ("duration", "leapyear"):
        gated = trial(report, "gated", task)
        assert gated["loop_passed"] and gated["hidden_passed"], gated


def test_a_staller_fails_honestly_everywhere(report: dict[str, Any]) -> None:
    for row in report["designs"]:
        stalled = trial(report, row["design"], "median")
        assert stalled["status"] == "fail" and not stalled["hidden_passed"]
        assert stalled["iterations"] == report["max_iterations"]


def test_memory_converges_where_a_fresh_context_repeats_itself(report: dict[str, Any]) -> None:
    fresh = trial(report, "gated", "roman")
    assert fresh["status"] == "fail" and fresh["iterations"] == report["max_iterations"]
    for name in ("gated-grounded", "gated-session"):
        remembered = trial(report, name, "roman")
        assert remembered["loop_passed"] and remembered["hidden_passed"], remembered
        assert remembered["iterations"] == 2


def test_the_same_seed_gives_the_same_trials() -> None:
    def outcomes(seed: str) -> list[tuple[str, str, int, bool]]:
        result = run_harness(
            "--json", "--designs", "gated", "--tasks", "slugify", "--seed", seed, "--repeat", "3"
        )
        assert result.returncode == 0, result.stderr
        trials = json.loads(result.stdout)["trials"]
        return [(t["task"], t["status"], t["iterations"], t["hidden_passed"]) for t in trials]

    assert outcomes("3") == outcomes("3")


def test_an_unknown_task_is_one_clear_line() -> None:
    result = run_harness("--tasks", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown task(s) nope; known: clamp")
