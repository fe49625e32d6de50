"""A/B of the 4 ÷ 1 worker-process drain on SQLite: two checkouts, rounds alternated.

Run from the repository root, with a second worktree holding the code to compare:

    git worktree add /tmp/base main && (cd /tmp/base && scripts/bootstrap)
    .venv/bin/python bench/drain_ab.py --base /tmp/base --rounds 5

Each round runs, in the base checkout and then in this one (each with its own
``.venv`` and its own ``bench/queue_store.py``), the drain ``bench/suite.py`` measures:
``processes_drain`` of ``--n`` pre-filled no-op tasks in batches of 64 with 1 and then
4 worker processes, at FULL and NORMAL. On a shared machine the figures of one round
move with the load, so only rounds taken back to back compare; the table gives the
median and range of each side, and the load average at each round's start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

ROUND = r"""
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, "bench")
import queue_store
n = int(sys.argv[1])
folder = Path(tempfile.mkdtemp(prefix="loops-ab-"))
found = {"load": os.getloadavg()[0]}
for sync in ("full", "normal"):
    one = queue_store.processes_drain(folder, sync, n, 64, 1)
    four = queue_store.processes_drain(folder, sync, n, 64, 4)
    found[sync] = {"one": one, "four": four}
    for file in folder.iterdir():
        file.unlink()
folder.rmdir()
print(json.dumps(found))
"""


def one_round(checkout: Path, n: int) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", ROUND, str(n)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def cell(values: list[float], digits: int) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--base", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000, help="tasks per drain (the suite's)")
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "this": ROOT}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for index in range(args.rounds):
        for name, checkout in sides.items():
            print(f"round {index + 1}/{args.rounds} {name}, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)  # fmt: skip
            found[name].append(one_round(checkout, args.n))
    print(f"\nn = {args.n:,} tasks per drain, batches of 64, {args.rounds} rounds alternated\n")
    print("| checkout | sync | 1 process, tasks/s | 4 processes, tasks/s | 4 ÷ 1 | load |")
    print("|---|---|---|---|---|---|")
    for name, rounds in found.items():
        loads = [float(r["load"]) for r in rounds]
        for sync in ("full", "normal"):
            one = [float(r[sync]["one"]) for r in rounds]
            four = [float(r[sync]["four"]) for r in rounds]
            ratio = [f / o for f, o in zip(four, one, strict=True)]
            print(
                f"| {name} | {sync.upper()} | {cell(one, 0)} | {cell(four, 0)} "
                f"| {cell(ratio, 2)} | {min(loads):.1f}-{max(loads):.1f} |"
            )


if __name__ == "__main__":
    main()
