"""A budget pauses a run, offline: each turn costs 400 tokens, the budget is 1,000.

    loop run examples/budget.loop.py     # exits 3 (paused) after the third turn

The third turn crosses the limit; no fourth turn starts (at most one turn past).
"""

from loops import agent_job, budget, loop, predicate

job = loop(
    name="tend",
    body=agent_job(
        "Pick the next open issue and progress it.",
        engine="mock",
        engine_options={
            "default": {
                "text": "Progressed one issue.",
                "usage": {"input_tokens": 300, "output_tokens": 100},
            },
        },
    ),
    until=predicate(lambda ctx, last: False, name="backlog_empty"),
    max=10,
    budget=budget(tokens=1000),
)
