"""Peak RSS of an idle gateway, an idle worker, and a worker streaming a large transcript.

    .venv/bin/python bench/memory.py [--lines 200000] [--rounds 3]

Starts ``loop gateway`` on a fresh SQLite file (127.0.0.1, a free port) and reads the
peak resident set (``VmHWM`` in /proc/PID/status) of each process:

1. the gateway, idle for 1.5 s after it answers ``/healthz``;
2. ``loop worker --provider mock``, long-polling an empty queue for 2 s;
3. a worker process running one prompt task whose agent (the ``command`` engine)
   prints ``--lines`` lines of 100 bytes (10 MB at the default 100,000), streamed as
   agent text into the task's timeline and transcript: the task runner ``loop worker``
   runs, with a local queue client instead of the HTTP hop; read once the task is
   done. (Through the gateway the same stream completes too: checked on 2026-11-29
   with 20,000 and 100,000 lines, ``loop worker --provider command``; an earlier
   ``ReadError`` after the transcript upload no longer happens.)

Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from worker_gateway import LOOP, Gateway  # noqa: E402

EMIT = (
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "sys.stdin.read()\n"
    "line = 'x' * 90\n"
    "for i in range(n):\n"
    "    sys.stdout.write(f'{i:08d} {line}\\n')\n"
)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def start_worker(gateway: Gateway, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    """``loop worker ARGS`` against ``gateway``, its output in a log file."""
    with (folder / f"worker-{time.monotonic_ns()}.log").open("wb") as log:
        return subprocess.Popen(
            [LOOP, "worker", *args], env=gateway.env, stdout=log, stderr=subprocess.STDOUT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL after 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stream_task(folder: Path, lines: int) -> None:
    """``_stream`` mode: run one prompt task whose agent prints ``lines`` lines; print peaks.

    The worker's task runner with the command engine and a local queue client (the
    same code ``loop worker`` runs per task, without the HTTP hop to a gateway).
    """
    import asyncio

    from loops import config
    from loops.engines.command import CommandEngine
    from loops.services.queue import QueueService, task_spec
    from loops.worker.local import LocalQueueClient
    from loops.worker.options import WorkerOptions
    from loops.worker.runner import TaskRun

    emit = folder / "emit.py"
    emit.write_text(EMIT)
    settings = config.load_settings(env={"QUEUE_DB_PATH": str(folder / "stream.sqlite")})
    service = QueueService.open(settings)
    task = service.create_task(task_spec({"prompt": "stream", "cwd": str(folder)})).task
    engine = CommandEngine.from_options(argv=[sys.executable, str(emit), str(lines)])
    options = WorkerOptions(name="stream", provider="command", cwd=folder)
    before = peak_rss_mb(os.getpid())
    run = TaskRun(task, client=LocalQueueClient(service), options=options, engine=engine)
    report = asyncio.run(run.run())
    if report.status != "done":
        raise RuntimeError(f"the streaming task ended {report.status}")
    print(json.dumps({"before": before, "peak": peak_rss_mb(os.getpid())}))
    service.close()


def streaming_peak(folder: Path, lines: int) -> float:
    """Peak RSS in MiB of a worker process that ran one task streaming ``lines`` lines."""
    work = folder / "stream"
    work.mkdir()
    out = subprocess.run(
        [sys.executable, __file__, "_stream", str(work), str(lines)],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def one_round(folder: Path, lines: int) -> dict[str, float]:
    """The three peaks of one round, in MiB."""
    gateway = Gateway(folder)
    try:
        time.sleep(1.5)
        result = {"gateway_idle": peak_rss_mb(gateway.proc.pid)}
        # its own task type: a long poll still open when a worker stops can lease the
        # next task for the stopped worker (seen here; the lease then waits out its TTL)
        idle = start_worker(gateway, folder, "--provider", "mock", "--type", "idle")
        try:
            time.sleep(2.0)
            result["worker_idle"] = peak_rss_mb(idle.pid)
        finally:
            stop(idle)
        result["worker_streaming"] = streaming_peak(folder, lines)
    finally:
        gateway.close()
    return result


def measure(rounds: int, lines: int) -> dict[str, list[float]]:
    """Every figure over ``rounds`` fresh gateways, in MiB."""
    found: dict[str, list[float]] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="loops-memory-") as tmp:
            for key, value in one_round(Path(tmp), lines).items():
                found.setdefault(key, []).append(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="", help=argparse.SUPPRESS)
    parser.add_argument("folder", nargs="?", default="", help=argparse.SUPPRESS)
    parser.add_argument("n", nargs="?", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=int, default=100_000, help="transcript lines (100 B)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "_stream":
        stream_task(Path(args.folder), args.n)
        return
    if not Path("/proc/self/status").exists():
        sys.exit("error: bench/memory.py reads /proc (Linux only)")
    os.environ.setdefault("QUEUE_SQLITE_SYNC", "full")
    found = measure(args.rounds, args.lines)
    size_mb = args.lines * 100 / 1e6
    for key, values in found.items():
        print(f"{key} (transcript {size_mb:.0f} MB): peak RSS {statistics.median(values):.1f} MiB "
              f"({min(values):.1f}-{max(values):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
