"""A stand-in agent CLI that replays a recorded stdout stream (installed as `claude`/`codex`).

Controlled by environment variables, so a test can shape one run:

- ``FAKE_AGENT_FIXTURE``: JSONL file whose lines are printed to stdout;
- ``FAKE_AGENT_STDERR``: text written to stderr; ``FAKE_AGENT_EXIT``: exit status;
- ``FAKE_AGENT_HANG=1``: after the last line, sleep until killed;
- ``FAKE_AGENT_CHILD=1``: first start a child ``sleep`` in the same process group
  (``=session``: in a new session, as Claude Code runs its Bash tool);
- ``FAKE_AGENT_LOG``: write ``{"argv", "stdin", "cwd", "env", "pid", "child_pid"}`` there;
- ``FAKE_AGENT_IGNORE_TERM=1``: ignore SIGTERM (to exercise the SIGKILL fallback).
"""

import json
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    env = os.environ
    if env.get("FAKE_AGENT_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = None
    if env.get("FAKE_AGENT_CHILD") in ("1", "session"):
        new_session = env["FAKE_AGENT_CHILD"] == "session"
        child = subprocess.Popen(["sleep", "300"], start_new_session=new_session)
    stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    if env.get("FAKE_AGENT_LOG"):
        record = {
            "argv": sys.argv,
            "stdin": stdin,
            "cwd": os.getcwd(),
            "env": {
                k: v
                for k, v in env.items()
                if k.startswith(("LOOP_", "IS_SANDBOX", "EXTRA_", "GEMINI_", "OPENCODE_"))
            },
            "pid": os.getpid(),
            "child_pid": child.pid if child else None,
        }
        with open(env["FAKE_AGENT_LOG"], "w") as log:
            json.dump(record, log)
    if env.get("FAKE_AGENT_FIXTURE"):
        with open(env["FAKE_AGENT_FIXTURE"], "rb") as fixture:
            for line in fixture:
                sys.stdout.buffer.write(line if line.endswith(b"\n") else line + b"\n")
                sys.stdout.flush()
    if env.get("FAKE_AGENT_STDERR"):
        sys.stderr.write(env["FAKE_AGENT_STDERR"])
        sys.stderr.flush()
    if env.get("FAKE_AGENT_HANG") == "1":
        while True:
            time.sleep(3600)
    return int(env.get("FAKE_AGENT_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
