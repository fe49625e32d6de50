"""A fake agent CLI for the ``command`` engine: behaviour chosen by a ``MODE=`` word in the prompt.

Every run appends its prompt to ``$FAKE_AGENT_DIR/<task>.prompts`` and writes its pid to
``$FAKE_AGENT_DIR/<task>.pid``; then, by mode:

- ``MODE=quick``: print a STEP marker and a final line, exit 0.
- ``MODE=sleep``: sleep for a minute (to be killed), exit 0.
- ``MODE=ratelimit-once``: on the first run, fail like a rate-limited CLI (429 on stderr,
  "retry after 1s", exit 1); finish quickly on later runs.
- ``MODE=sleep-once``: sleep on the first run of the task, finish quickly on later runs
  (and create ``value.txt`` so a check passes).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path


def main() -> int:
    prompt = sys.stdin.read()
    where = Path(os.environ["FAKE_AGENT_DIR"])
    task = os.environ.get("LOOP_TASK_ID", "none")
    runs = where / f"{task}.prompts"
    earlier = runs.read_text().count("\n=====\n") if runs.exists() else 0
    with runs.open("a") as out:
        out.write(prompt + "\n=====\n")
    (where / f"{task}.pid").write_text(str(os.getpid()))
    match = re.search(r"MODE=([\w-]+)", prompt)
    mode = match.group(1) if match else "quick"
    if mode == "ratelimit-once" and earlier == 0:
        print("error: 429 rate limit exceeded, retry after 1s", file=sys.stderr, flush=True)
        return 1
    if mode == "sleep" or (mode == "sleep-once" and earlier == 0):
        print("working on it", flush=True)
        time.sleep(60)
    if mode == "sleep-once":
        Path("value.txt").write_text("ok")
    print(f"STEP[work]: DONE idempotency=work-{task} note=did the work", flush=True)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
