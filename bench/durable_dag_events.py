"""Events a durable dag's parent task writes, and the wall time of the whole run.

Run:  .venv/bin/python bench/durable_dag_events.py chain|fan N

Runs every queued task with `loop run-job` in this process (one at a time, lowest id
first) until the dag is done: the parent wakes once per finished child. ``chain`` is
n0 -> n1 -> ...; ``fan`` is N nodes, then a join needing all of them (concurrency 4).
"""

import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

import loops
from loops import config
from loops.cli.main import cli
from loops.services.queue import QueueService

shape, n = sys.argv[1], int(sys.argv[2])
root = Path(tempfile.mkdtemp())
os.chdir(root)
os.environ.update(
    QUEUE_DB_PATH=str(root / "q.sqlite"),
    LOOPS_HOME=str(root / "home"),
    QUEUE_MAX_CHILDREN_PER_TASK=str(n + 2),
    QUEUE_MAX_ATTEMPTS="5",
)
os.environ.pop("LOOPS_CONFIG", None)
if shape == "chain":
    nodes = "{f'n{i}': {'job': w(f'n{i}'), 'needs': [f'n{i-1}'] if i else []} for i in range(N)}"
    extra = ""
else:
    nodes = (
        "{**{f'n{i}': w(f'n{i}') for i in range(N)}, "
        "'join': {'job': w('join'), 'needs': [f'n{i}' for i in range(N)]}}"
    )
    extra = ", concurrency=4"
(root / "d.loop.py").write_text(
    "from loops import dag, fn_job\n"
    f"N = {n}\n"
    "def w(name):\n    return fn_job(lambda ctx: None, name=name)\n"
    f"job = dag(name='d', durable=True, nodes={nodes}{extra})\n"
)
runner = CliRunner()
runner.invoke(
    cli, ["tasks:create", "--type", "loop", "--loop-file", "d.loop.py"], catch_exceptions=False
)
service = QueueService.open(config.load_settings(env=dict(os.environ), cwd=root))
start = time.perf_counter()
turns = 0
while True:
    queued = service.list_tasks(status="queued", limit=1000)
    if not queued:
        break
    task = min(queued, key=lambda t: t.id)
    turns += task.id == 1
    runner.invoke(cli, ["run-job", str(task.id), "--provider", "mock"], catch_exceptions=False)
wall = time.perf_counter() - start
parent = service.get_task(1)
assert parent.status.value == "done", (parent.status, parent.error)
events, after = [], 0
while page := service.list_events(task_id=1, limit=10_000, after_id=after):
    events += page
    after = page[-1].id
kinds = collections.Counter(e.type for e in events)
node = {k: v for k, v in sorted(kinds.items()) if k.startswith(("node.", "job."))}
print(
    f"{loops.__file__.split('/src/')[0]} {shape} n={n} parent turns={turns} "
    f"parent events={len(events)} {node} wall={wall:.2f}s"
)
