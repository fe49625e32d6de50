"""A misbehaving agent CLI for the ``command`` engine, chosen by a ``MODE=`` word in the prompt.

It writes its pid, and its child's, to ``$FAKE_AGENT_DIR/<task>.pids`` (one a line), then:

- ``MODE=quick``: answers one line and exits 0;
- ``MODE=hang``: starts a child in its process group, then sleeps forever;
- ``MODE=stubborn``: ignores SIGTERM, and so does the child it starts; sleeps forever;
- ``MODE=flood``: writes 100 MB to stdout (50 MB in 64 KiB lines, then one 50 MB line);
- ``MODE=midstream``: writes half a line, then dies with status 3 without flushing more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

IGNORE_TERM_AND_SLEEP = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
)


def main() -> int:
    prompt = sys.stdin.read()
    where = Path(os.environ["FAKE_AGENT_DIR"])
    task = os.environ.get("LOOP_TASK_ID", "none")
    match = re.search(r"MODE=([\w-]+)", prompt)
    mode = match.group(1) if match else "quick"
    pids = [os.getpid()]
    if mode in ("hang", "stubborn"):
        if mode == "stubborn":
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", IGNORE_TERM_AND_SLEEP])
        pids.append(child.pid)
    (where / f"{task}.pids").write_text("\n".join(map(str, pids)) + "\n")
    out = sys.stdout.buffer
    if mode in ("hang", "stubborn"):
        print("working", flush=True)
        time.sleep(600)
    elif mode == "flood":
        line = b"y" * (64 * 1024 - 1) + b"\n"
        for _ in range(800):
            out.write(line)
        block = b"z" * (1024 * 1024)
        for _ in range(50):
            out.write(block)
        out.write(b"\nfinished\n")
        out.flush()
    elif mode == "midstream":
        out.write(b'{"type": "assistant", "message": {"content": [{"type": "te')
        out.flush()
        os._exit(3)
    else:
        print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
