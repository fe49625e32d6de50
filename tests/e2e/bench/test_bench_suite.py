"""``bench/run --quick --loops-only`` prints the suite's one table (a smoke test, not speed).

It installs no peers and needs no Redis; every figure measured for loops alone must
appear as a row with a median and a min-max. The figures' values are not judged here:
benchmarks are recorded in bench/RESULTS.md, never asserted on.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ROW = re.compile(r"^\| (\d) [a-z]+ \| (.+?) \| ([\d,.]+) \(([\d,.]+)-([\d,.]+)\)( \S+)? \|")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_loops_only_prints_every_figure() -> None:
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--loops-only"],
        capture_output=True,
        text=True,
        timeout=390,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("loops benchmark suite, ")
    assert any(line.startswith("machine: ") for line in lines)
    assert "skipped: peers (huey, pgqueuer, procrastinate, celery, rq): --loops-only" in lines
    rows = [m for m in map(ROW.match, lines) if m]
    figures = {m.group(1) for m in rows}
    assert figures == {"1", "2", "3", "4", "5", "6", "7"}, result.stdout
    labels = {m.group(2) for m in rows}
    for wanted in (
        "loops SQLite FULL (default)",
        "loops SQLite NORMAL, 4 worker processes",
        "loops SQLite via gateway, median",
        "lease median, NORMAL, 10,000 queued",
        "4 worker processes over HTTP (FULL)",
        "loop(), per iteration over bare Python",
        "idle worker, peak RSS",
    ):
        assert wanted in labels, result.stdout
    # a goal row names its bound and whether the median met it
    assert re.search(r"\| >= 0\.5 \| (yes|NO) \|$", result.stdout, re.MULTILINE)


def test_an_unknown_step_is_one_clear_line() -> None:
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--loops-only", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "unknown step(s) nope; use: sqlite, redis, postgres" in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_without_a_postgres_server_the_suite_starts_and_removes_a_throwaway_one() -> None:
    import os
    import tempfile

    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("loops-bench-pg-*"))
    env = {**os.environ, "BENCH_PG_URL": "postgresql://postgres@127.0.0.1:1"}
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--loops-only", "--only", "postgres"],
        capture_output=True,
        text=True,
        timeout=290,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started a throwaway cluster at postgresql://postgres@127.0.0.1:" in result.stderr
    labels = {m.group(2) for m in map(ROW.match, result.stdout.splitlines()) if m}
    assert {"loops PostgreSQL", "loops PostgreSQL, 1 worker"} <= labels, result.stdout
    assert set(temp.glob("loops-bench-pg-*")) <= before, "the cluster's folder was left behind"
