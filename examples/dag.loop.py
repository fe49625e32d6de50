"""A dag of jobs, offline: needs, concurrency, an optional node and a `when`.

    loop run examples/dag.loop.py --engine mock

`plan` runs first; `api` and `ui` then run concurrently (at most two nodes at once);
`lint` is optional, so its failure neither fails the dag nor blocks `review`; `docs`
runs only when the API reported changes; `review` is a judge used as a gate.
"""

from loops import Outcome, agent_check, agent_job, dag, fn_job, gate_job


def plan(ctx):
    return Outcome("pass", "two parts: api and ui", data={"parts": ["api", "ui"]})


def lint(ctx):
    return False  # a failing optional check


job = dag(
    name="ship",
    nodes={
        "plan": fn_job(plan),
        "api": {"job": agent_job("Build the API from the plan.", name="api"), "needs": ["plan"]},
        "ui": {"job": agent_job("Build the UI from the plan.", name="ui"), "needs": ["plan"]},
        "lint": {"job": fn_job(lint), "optional": True},
        "docs": {
            "job": agent_job("Document the API.", name="docs"),
            "needs": ["api"],
            "when": lambda ctx: "changed" in ctx.upstream["api"].summary,
        },
        "review": {
            "job": gate_job("review", agent_check("Do the API and the UI fit together?")),
            "needs": ["api", "ui", "lint"],
        },
    },
    concurrency=2,
)
