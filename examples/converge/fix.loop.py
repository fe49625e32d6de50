"""Converge, offline: a scripted agent fixes a failing test over three turns.

The gate is honest: the tests really run (and must count at least one), the tests
must be unchanged since the run began, and a separate judge must agree. The scripted
agent first tries to pass by weakening the test (caught by ``unchanged``), then makes
a wrong fix (caught by the test run), then the right one. Run it on a copy:

    cp -r examples/converge/project /tmp/calc
    loop run examples/converge/fix.loop.py --cwd /tmp/calc
"""

import sys

from loops import agent_check, agent_job, budget, command_succeeds, loop, unchanged

job = loop(
    name="fix-calc",
    body=agent_job(
        prompt="Make the failing tests pass without editing the tests.",
        engine="mock",
        engine_options={"script": "fix.mock.json"},  # relative to this file
        consume_feedback=True,
    ),
    until=[
        command_succeeds(
            sys.executable,
            ["-m", "pytest", "-q", "-p", "no:cacheprovider"],
            min_tests=1,  # zero tests collected is not a pass
            env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # a fast, plugin-free test run
        ),
        unchanged("test_*.py"),
        agent_check(
            "Is the fix correct and minimal?",
            dimensions=["correctness", "scope"],
            engine="mock",  # the same scripted engine: its default turn is the judge's answer
            engine_options={"script": "fix.mock.json"},
        ),
    ],
    max=5,
    budget=budget(usd=1, seconds=300),
)
