"""The huey side of bench/queue_store.py; runs in bench/.venv (huey installed there).

Usage: python huey_peer.py DB_PATH N -> prints {"enqueue": tasks/s, "drain": tasks/s}.
       python huey_peer.py DB_PATH serve -> reads a count K per line, enqueues K tasks,
       answers with the seconds they took (for enqueue measures interleaved in time).
huey's SqliteHuey runs WAL with SQLite's default synchronous (FULL). The drain is what
one consumer worker thread does per task (dequeue, execute), without its poll delay.
"""

from __future__ import annotations

import json
import sys
import time

from huey import SqliteHuey


def serve(path: str) -> None:
    huey = SqliteHuey(filename=path)

    @huey.task()
    def noop() -> None:
        return None

    print("ready", flush=True)
    for line in sys.stdin:
        k = int(line)
        start = time.perf_counter()
        for _ in range(k):
            noop()
        print(time.perf_counter() - start, flush=True)


def main() -> None:
    if sys.argv[2] == "serve":
        serve(sys.argv[1])
        return
    path, n = sys.argv[1], int(sys.argv[2])
    huey = SqliteHuey(filename=path)

    @huey.task()
    def noop() -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        noop()
    enqueue = n / (time.perf_counter() - start)
    start = time.perf_counter()
    done = 0
    while True:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        done += 1
    drain = done / (time.perf_counter() - start)
    assert done == n, (done, n)
    print(json.dumps({"enqueue": enqueue, "drain": drain}))


if __name__ == "__main__":
    main()
