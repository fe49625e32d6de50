"""The README's first example: an agent works until the tests pass and a judge agrees.

loop validate examples/feature.loop.py
loop run examples/feature.loop.py --cwd path/to/your/repo            # on Claude Code
loop run examples/feature.loop.py --cwd path/to/your/repo --engine mock   # offline
"""

from loops import agent_check, agent_job, budget, command_succeeds, loop

job = loop(
    name="feature",
    body=agent_job(prompt="Make the failing tests in tests/ pass.", engine="claude"),
    until=[
        command_succeeds("pytest", ["-q"]),
        agent_check(
            question="Is the change complete and minimal?",
            dimensions=["correctness", "scope"],
        ),
    ],
    max=8,
    budget=budget(usd=5, seconds=3600),
)
