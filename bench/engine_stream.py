"""Engine-side cost of an agent's event stream: parse 10,000 events from a real-schema transcript.

A fake ``claude``/``codex``/``gemini``/``opencode`` executable (tests/fakes/fake_agent.py)
prints a transcript
built from the recorded real-CLI fixtures: the success turn's assistant/tool lines
repeated until the stream holds the requested number of events, then its result
line. The figure is the CPU time of *this* process (parsing, classification, event
objects), i.e. what the worker pays per agent event before storing it; the fake
agent's own CPU is excluded. ``--record`` adds a row per engine wrapped in the
recording engine (events, raw lines and the cwd snapshot written to a temp dir), the
cost of ``--record``. Usage::

    .venv/bin/python bench/engine_stream.py [--events 10000] [--runs 7] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "engines"
FAKE_AGENT = REPO / "tests" / "fakes" / "fake_agent.py"

from loops.engines import base  # noqa: E402
from loops.engines.claude import ClaudeEngine, ClaudeOptions  # noqa: E402
from loops.engines.codex import CodexEngine, CodexOptions  # noqa: E402
from loops.engines.gemini import GeminiEngine, GeminiOptions  # noqa: E402
from loops.engines.opencode import OpenCodeEngine, OpenCodeOptions  # noqa: E402
from loops.engines.recording import RecordingEngine  # noqa: E402

TOOLS = ("claude", "codex", "gemini", "opencode")
#: how each transcript splits into (head, repeated body, tail)
SPLITS = {"claude": (1, -2), "codex": (3, -2), "gemini": (2, -1), "opencode": (0, -3)}


def transcript(tool: str, events: int, out: Path) -> None:
    lines = (FIXTURES / tool / "success_tool.jsonl").read_text().splitlines()
    start, end = SPLITS[tool]
    head, body, tail = lines[:start], lines[start:end], lines[end:]
    repeated: list[str] = []
    while len(repeated) < events:
        repeated.extend(body)
    out.write_text("\n".join(head + repeated[:events] + tail) + "\n")


async def one_run(engine: base.Engine, cwd: Path) -> tuple[float, float, int]:
    count = 0

    def seen(_: base.TurnEvent) -> None:
        nonlocal count
        count += 1

    cpu, wall = time.process_time(), time.perf_counter()
    result = await base.run_turn(engine, base.TurnRequest(prompt="p", cwd=cwd), on_event=seen)
    assert result.ok, result.error
    return time.process_time() - cpu, time.perf_counter() - wall, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="also measure with --record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for tool in TOOLS:
            exe = bin_dir / tool
            exe.write_text(f"#!{sys.executable}\n" + FAKE_AGENT.read_text())
            exe.chmod(0o755)
        cwd = root / "cwd"
        cwd.mkdir()
        rows = [(tool, False) for tool in TOOLS]
        if args.record:
            rows += [(tool, True) for tool in TOOLS]
        for tool, record in rows:
            fixture = root / f"{tool}.jsonl"
            transcript(tool, args.events, fixture)
            env = {
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "HOME": str(root),
                "FAKE_AGENT_FIXTURE": str(fixture),
            }
            engine: base.Engine
            if tool == "claude":
                engine = ClaudeEngine(ClaudeOptions(env=env))
            elif tool == "codex":
                engine = CodexEngine(CodexOptions(env=env, model="gpt-5"))
            elif tool == "gemini":
                engine = GeminiEngine(GeminiOptions(env=env, model="gemini-2.5-flash"))
            else:
                engine = OpenCodeEngine(OpenCodeOptions(env=env))
            if record:
                engine = RecordingEngine(engine, root / f"rec-{tool}")
            asyncio.run(one_run(engine, cwd))  # warm-up (imports, price table)
            runs = [asyncio.run(one_run(engine, cwd)) for _ in range(args.runs)]
            cpu = [r[0] for r in runs]
            wall = [r[1] for r in runs]
            print(
                json.dumps(
                    {
                        "engine": tool + (" --record" if record else ""),
                        "stream_lines": args.events,
                        "events_emitted": runs[0][2],
                        "cpu_s_median": round(statistics.median(cpu), 3),
                        "cpu_s_min": round(min(cpu), 3),
                        "cpu_s_max": round(max(cpu), 3),
                        "wall_s_median": round(statistics.median(wall), 3),
                        "cpu_us_per_line": round(statistics.median(cpu) / args.events * 1e6, 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
