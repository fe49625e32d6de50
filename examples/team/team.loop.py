"""A team as a graph, offline: specialists, a review panel, feedback and a kickback.

    loop validate examples/team/team.loop.py
    loop describe examples/team/team.loop.py --json     # each agent node's contract
    mkdir -p /tmp/team && loop run examples/team/team.loop.py --cwd /tmp/team   # offline
    loop run examples/team/team.loop.py --cwd path/to/repo --engine claude      # for real

The scripted agents write store.py and api.py into the run's directory (--cwd).

The store engineer and the API engineer are workers; the graph orchestrates. The
review gate is a panel of two judges; when it fails it kicks the work back to the API
node (at most twice), whose next prompt lists each reviewer's findings. Offline, the
scripted security judge first finds an injection, the API is rebuilt, and the panel
passes.
"""

from loops import (
    agent_check,
    agent_job,
    dag,
    define_agent,
    define_skill,
    from_file,
    gate_job,
    review_context,
    review_panel,
)

# every agent and judge uses the scripted mock unless `loop run --engine NAME` says otherwise
MOCK = {"engine": "mock", "engine_options": {"script": "team.mock.json"}}

tdd = define_skill(name="tdd", instructions=from_file("skills/tdd.md"))

store_engineer = define_agent(
    name="store-engineer",
    system=from_file("agents/store.md"),
    model="sonnet",
    tools=["edit", "bash"],
    leaf=True,
    tier="worker",
    capabilities=["storage engine", "id stability"],
    outputs=["patch", "test-report"],
    skills=[tdd],
    failure_modes=[
        {"mode": "tests-flaky", "recovery": "isolate, retry once", "severity": "should-fix"}
    ],
)
api_engineer = define_agent(
    name="api-engineer",
    system=from_file("agents/api.md"),
    leaf=True,
    tier="worker",
    skills=[tdd],
    requires_skills=["tdd"],
)

review = review_panel(
    reviewers=[
        {
            "name": "security",
            "review": agent_check("Is it safe?", context=review_context(diff=True), **MOCK),
            "severity": "block",
        },
        {
            "name": "correctness",
            "review": agent_check("Is it correct?", context=review_context(ledger=True), **MOCK),
        },
    ],
)

job = dag(
    name="ship",
    max_kickbacks=2,
    nodes={
        "store": agent_job("Build the store to its tests.", agent=store_engineer, **MOCK),
        "api": {
            "job": agent_job(
                "Build the API on the store.",
                agent=api_engineer,
                consume_feedback=True,
                graph_context=True,
                **MOCK,
            ),
            "needs": ["store"],
        },
        "review": {
            "job": gate_job("review", review, kickback_to="api"),
            "needs": ["api"],
            "accepts_kickback_to": ["api"],
        },
    },
)
