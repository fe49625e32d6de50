"""Teams as graphs: agents and skills, review panels, feedback, kickbacks (issue 6)."""

from __future__ import annotations

import pytest

from loops import (
    Finding,
    Verdict,
    agent_check,
    agent_job,
    dag,
    define_agent,
    define_skill,
    errors,
    fn_job,
    gate_job,
    kickback,
    loop,
    predicate,
    review_panel,
    revision_request,
)
from loops.engines.mock import MockEngine, MockTurn
from loops.flow import describe


def vote(name: str, met: bool, reason: str | None = None):
    return predicate(lambda ctx, last: Verdict(met, reason or f"{name} voted {met}"), name=name)


async def _gate(run_job, condition):
    result, sink = await run_job(gate_job("panel", condition))
    return result, sink.of_type("verdict")[0].data


async def test_panel_all_or_k_of_n_with_named_findings(run_job):
    reviewers = [
        {
            "name": "security",
            "review": vote("s", False, "SQL built from input"),
            "severity": "block",
        },
        {"name": "correctness", "review": vote("c", True)},
        {"name": "simplicity", "review": vote("x", False, "two layers where one would do")},
    ]
    result, verdict = await _gate(run_job, review_panel(reviewers))
    assert result.status.value == "fail"
    assert verdict["reason"].startswith("1 of 3 reviewers passed (need 3): security: SQL built")
    assert verdict["revision"]["findings"] == [
        {"source": "security", "text": "SQL built from input", "severity": "block"},
        {"source": "simplicity", "text": "two layers where one would do", "severity": "should-fix"},
    ]
    assert [d["decided_by"] for d in verdict["details"]] == [
        "security",
        "correctness",
        "simplicity",
    ]
    result, verdict = await _gate(
        run_job, review_panel([*reviewers[1:], vote("extra", True)], pass_=2)
    )
    assert result.status.value == "pass" and "revision" not in verdict


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reviewers": []}, "an empty panel reviews nothing"),
        ({"reviewers": [predicate(lambda c, _: True, name="a")], "pass_": 2}, "from 1 to 1"),
        (
            {"reviewers": [{"name": "a", "review": predicate(lambda c, _: True)}] * 2},
            "two reviewers named 'a'",
        ),
        ({"reviewers": [{"name": "a"}]}, "has no 'review'"),
        (
            {
                "reviewers": [
                    {"name": "a", "review": predicate(lambda c, _: True), "severity": "meh"}
                ]
            },
            "severity",
        ),
        (
            {"reviewers": [{"review": predicate(lambda c, _: True), "weight": 2}]},
            "unknown key 'weight'",
        ),
    ],
)
def test_bad_panels_are_construction_errors(kwargs, message):
    with pytest.raises(errors.ConstructionError, match=message):
        review_panel(**kwargs)


async def test_a_failing_panel_review_is_threaded_into_the_next_prompt(run_job):
    engine = MockEngine(default=MockTurn(text="done"))
    state = {"reviews": 0}

    def security(ctx, last):
        state["reviews"] += 1
        return state["reviews"] > 1

    panel = review_panel(
        [
            {"name": "security", "review": predicate(security), "severity": "block"},
            {"name": "style", "review": predicate(lambda c, _: True)},
        ]
    )
    job = loop(
        name="impl",
        body=agent_job("Implement the store.", engine=engine, consume_feedback=True),
        until=lambda c, _: True,
        review=panel,
        max=3,
    )
    result, sink = await run_job(job)
    assert result.status.value == "pass"
    second = engine.requests[1].prompt
    assert second == (
        "Implement the store.\n\n## Review findings to address\n"
        "- security (block): security returned False"
    )
    assert [e.data["severity"] for e in sink.of_type("surfacing")] == ["block"]
    routed = sink.of_type("revision.routed")[0].data
    assert routed["accepted"] and routed["target"] == "impl/agent"
    assert sink.of_type("revision.emitted")[0].data["findings"][0]["source"] == "security"


def counting(runs: dict[str, int], name: str, result=None):
    def fn(ctx):
        runs[name] = runs.get(name, 0) + 1
        value = result(ctx) if callable(result) else result
        return value

    return fn_job(fn, name=name)


def team(runs, review_result, *, max_kickbacks=1, **gate_node):
    return dag(
        name="ship",
        max_kickbacks=max_kickbacks,
        nodes={
            "plan": counting(runs, "plan"),
            "store": {"job": counting(runs, "store"), "needs": ["plan"]},
            "api": {"job": counting(runs, "api"), "needs": ["store"]},
            "docs": {"job": counting(runs, "docs"), "needs": ["plan"]},
            "review": {
                "job": counting(runs, "review", review_result),
                "needs": ["api", "docs"],
                **gate_node,
            },
        },
    )


async def test_a_kickback_reruns_exactly_the_target_and_its_dependents(run_job):
    runs: dict[str, int] = {}
    seen_reviews = []

    def review(ctx):
        seen_reviews.append(ctx.last_review.reason if ctx.last_review else None)
        return kickback("store", "ids are not stable") if runs["review"] == 1 else True

    result, sink = await run_job(team(runs, review))
    assert result.status.value == "pass", result.reason
    assert runs == {"plan": 1, "store": 2, "api": 2, "docs": 1, "review": 2}
    assert seen_reviews == [None, "ids are not stable"]
    routed = sink.of_type("revision.routed")[0].data
    assert routed == {
        **routed,
        "accepted": True,
        "target": "store",
        "rerun": ["store", "api", "review"],
        "reason": "kickback 1 of 1",
    }
    assert sink.of_type("surfacing")[0].data["source"] == "review"


async def test_kickbacks_are_bounded_and_the_dag_terminates(run_job):
    runs: dict[str, int] = {}
    result, sink = await run_job(
        team(runs, lambda ctx: kickback("store", "still wrong"), max_kickbacks=2)
    )
    assert result.status.value == "fail"
    assert runs["review"] == 3 and runs["store"] == 3
    assert "kickback refused: dag 'ship' allows max_kickbacks=2 and used 2" in result.reason
    assert [e.data["accepted"] for e in sink.of_type("revision.routed")] == [True, True, False]


@pytest.mark.parametrize(
    ("target", "gate_node", "refusal"),
    [
        ("ghost", {}, "'ghost' is not a node of dag 'ship'"),
        ("docs", {"accepts_kickback_to": ["store"]}, "node 'review' may kick back only to: store"),
    ],
)
async def test_invalid_kickback_targets_fail_the_node_clearly(run_job, target, gate_node, refusal):
    runs: dict[str, int] = {}
    result, _ = await run_job(team(runs, lambda ctx: kickback(target, "redo"), **gate_node))
    assert result.status.value == "fail" and refusal in result.reason
    assert runs["review"] == 1


async def test_a_kickback_must_go_upstream(run_job):
    runs: dict[str, int] = {}
    job = dag(
        name="d",
        max_kickbacks=3,
        nodes={
            "a": counting(runs, "a", lambda ctx: kickback("b", "b is wrong")),
            "b": counting(runs, "b"),
        },
    )
    result, _ = await run_job(job)
    assert "'b' is not upstream of 'a'" in result.reason


async def test_a_gate_kicks_back_with_its_findings(run_job):
    engine = MockEngine(default=MockTurn(text="built"))
    verdicts = iter([False, True])
    panel = review_panel([{"name": "security", "review": predicate(lambda c, _: next(verdicts))}])
    job = dag(
        name="ship",
        max_kickbacks=1,
        nodes={
            "build": agent_job("Build it.", name="build", engine=engine, consume_feedback=True),
            "review": {"job": gate_job("review", panel, kickback_to="build"), "needs": ["build"]},
        },
    )
    result, _ = await run_job(job)
    assert result.status.value == "pass"
    assert engine.requests[1].prompt.endswith(
        "## Review findings to address\n- security: predicate returned False"
    )


@pytest.mark.parametrize(
    ("nodes", "max_kickbacks", "message"),
    [
        (
            {
                "a": fn_job(lambda c: None),
                "g": {
                    "job": gate_job("g", predicate(lambda c, _: True), kickback_to="z"),
                    "needs": ["a"],
                },
            },
            1,
            "'z' is not a node",
        ),
        (
            {
                "a": fn_job(lambda c: None),
                "g": {
                    "job": gate_job("g", predicate(lambda c, _: True), kickback_to="a"),
                    "needs": ["a"],
                },
            },
            0,
            "max_kickbacks=0",
        ),
        (
            {"a": {"job": fn_job(lambda c: None), "accepts_kickback_to": ["nope"]}},
            1,
            "accepts_kickback_to names 'nope'",
        ),
        ({"a": fn_job(lambda c: None)}, -1, "max_kickbacks=-1"),
    ],
)
def test_static_kickback_errors(nodes, max_kickbacks, message):
    with pytest.raises(errors.ConstructionError, match=message):
        dag(name="d", nodes=nodes, max_kickbacks=max_kickbacks)


def test_revision_request_and_kickback_outcomes():
    outcome = revision_request("store", ["ids unstable", Finding("qa", "flaky", "nit")])
    assert outcome.status.value == "fail" and outcome.revision.target == "store"
    assert [f.source for f in outcome.revision.findings] == ["", "qa"]
    assert kickback("api", "no pagination").summary == "revision of api requested: no pagination"
    with pytest.raises(errors.ConstructionError):
        revision_request("x")
    with pytest.raises(errors.ConstructionError, match="severity"):
        Finding("a", "b", "urgent")


async def test_agents_fold_skills_in_order_and_inline_settings_override(run_job):
    tdd = define_skill(name="tdd", instructions="Write the failing test first.")
    small = define_skill(name="small-diff", instructions="Keep diffs small.")
    engineer = define_agent(
        name="store-engineer",
        system="You build storage engines.",
        model="sonnet",
        tools=["edit", "bash"],
        leaf=True,
        skills=[tdd, small],
    )
    engine = MockEngine(default=MockTurn(text="ok"))
    await run_job(agent_job("Build the store.", agent=engineer, engine=engine))
    request = engine.requests[0]
    assert request.system == (
        "You build storage engines.\n\n## Skill: tdd\n\nWrite the failing test first."
        "\n\n## Skill: small-diff\n\nKeep diffs small."
    )
    assert (request.model, request.tools, request.leaf) == ("sonnet", ("edit", "bash"), True)
    await run_job(
        agent_job(
            "x",
            agent=engineer,
            engine=engine,
            system="Persona B.",
            model="opus",
            tools=["read"],
            leaf=False,
        )
    )
    request = engine.requests[1]
    assert request.system.startswith("Persona B.\n\n## Skill: tdd")
    assert (request.model, request.tools, request.leaf) == ("opus", ("read",), False)
    job = agent_job("x", agent=engineer)
    assert job.name == "store-engineer"


def test_bad_agents_and_skills():
    tdd = define_skill(name="tdd", instructions="x")
    with pytest.raises(errors.ConstructionError, match="lists skill 'tdd' twice"):
        define_agent(name="a", skills=[tdd, tdd])
    with pytest.raises(errors.ConstructionError, match="needs instructions"):
        define_skill(name="empty", instructions=" ")
    with pytest.raises(errors.ConstructionError, match="failure_modes severity 'meh'"):
        define_agent(name="a", failure_modes=[{"mode": "x", "severity": "meh"}])
    with pytest.raises(errors.ConstructionError, match="each outputs entry needs 'name'"):
        define_agent(name="a", outputs=[{"kind": "patch"}])


async def test_graph_context_names_the_node_its_needs_and_dependents(run_job):
    engine = MockEngine(default=MockTurn(text="ok"))
    job = dag(
        name="ship",
        nodes={
            "store": fn_job(lambda c: None, name="store"),
            "api": {
                "job": agent_job("Build the API.", name="api", engine=engine, graph_context=True),
                "needs": ["store"],
            },
            "review": {"job": fn_job(lambda c: None, name="review"), "needs": ["api"]},
        },
    )
    await run_job(job)
    assert engine.requests[0].prompt == (
        "Build the API.\n\n## Your place in the graph\n"
        "You are node `api` of `ship`. You build on: store. Waiting on your work: review."
    )


def test_describe_json_shows_the_agent_contract():
    tdd = define_skill(name="tdd", instructions="x")
    agent = define_agent(
        name="store-engineer",
        model="sonnet",
        tools=["edit"],
        leaf=True,
        tier="worker",
        capabilities=["storage engine"],
        outputs=["patch", {"name": "test-report"}],
        skills=[tdd],
        requires_skills=["tdd"],
        uses_skills=["small-diff"],
        human_gates=[{"name": "prod-approval", "when": "deploying"}],
        failure_modes=[{"mode": "tests-flaky", "recovery": "retry once", "severity": "should-fix"}],
    )
    panel = review_panel([{"name": "security", "review": agent_check("Is it safe?")}], pass_=1)
    job = dag(
        name="team",
        max_kickbacks=2,
        nodes={
            "store": agent_job("Build the store.", agent=agent),
            "review": {
                "job": gate_job("review", panel, kickback_to="store"),
                "needs": ["store"],
                "accepts_kickback_to": ["store"],
            },
        },
    )
    tree = describe.shape(job)
    assert tree["max_kickbacks"] == 2
    store, review = tree["children"]
    assert store["agent"] == {
        "name": "store-engineer",
        "leaf": True,
        "model": "sonnet",
        "tier": "worker",
        "tools": ["edit"],
        "skills": ["tdd"],
        "capabilities": ["storage engine"],
        "requires_skills": ["tdd"],
        "uses_skills": ["small-diff"],
        "outputs": [{"name": "patch"}, {"name": "test-report"}],
        "human_gates": [{"name": "prod-approval", "when": "deploying"}],
        "failure_modes": [
            {"mode": "tests-flaky", "recovery": "retry once", "severity": "should-fix"}
        ],
    }
    assert store["name"] == "store" and store["job"] == "store-engineer"
    assert review["kickback_to"] == "store" and review["accepts_kickback_to"] == ["store"]
    assert review["condition"]["reviewers"] == [{"name": "security", "severity": "should-fix"}]
    assert review["condition"]["members"][0]["question"] == "Is it safe?"


async def test_a_kickback_to_a_loop_node_reaches_the_loops_first_turn(run_job):
    engine = MockEngine(default=MockTurn(text="built"))
    checks = iter([kickback("build", "add pagination"), True])
    job = dag(
        name="ship",
        max_kickbacks=1,
        nodes={
            "build": loop(
                name="build-loop",
                body=agent_job("Build.", engine=engine, consume_feedback=True),
                until=predicate(lambda ctx, last: True),
                max=2,
            ),
            "check": {"job": fn_job(lambda ctx: next(checks), name="check"), "needs": ["build"]},
        },
    )
    result, _ = await run_job(job)
    assert result.status.value == "pass"
    assert engine.requests[1].prompt == (
        "Build.\n\n## Review findings to address\n- check: add pagination"
    )


async def test_a_kickback_cancels_running_nodes_it_will_rerun(run_job):
    import asyncio

    runs: dict[str, int] = {}

    async def slow(ctx):
        runs["slow"] = runs.get("slow", 0) + 1
        await asyncio.sleep(5 if runs["slow"] == 1 else 0)

    def review(ctx):
        runs["review"] = runs.get("review", 0) + 1
        return kickback("plan", "replan") if runs["review"] == 1 else True

    job = dag(
        name="d",
        max_kickbacks=1,
        nodes={
            "plan": counting(runs, "plan"),
            "slow": {"job": fn_job(slow, name="slow"), "needs": ["plan"]},
            "fast": {"job": counting(runs, "fast"), "needs": ["plan"]},
            "review": {"job": fn_job(review, name="review"), "needs": ["fast"]},
        },
    )
    result, sink = await run_job(job)
    assert result.status.value == "pass"
    assert runs == {"plan": 2, "slow": 2, "fast": 2, "review": 2}
    cancelled = [e.path for e in sink.of_type("job.finished") if e.data["summary"] == "cancelled"]
    assert cancelled == ["d/slow"]
    assert sink.of_type("revision.routed")[0].data["rerun"] == ["plan", "slow", "fast", "review"]


async def test_results_of_nodes_reset_by_a_kickback_in_the_same_tick_are_dropped(run_job):
    runs: dict[str, int] = {}

    def review(ctx):
        runs["review"] = runs.get("review", 0) + 1
        return kickback("plan", "replan") if runs["review"] == 1 else True

    nodes = {"plan": counting(runs, "plan")}
    nodes.update({f"w{i}": {"job": counting(runs, f"w{i}"), "needs": ["plan"]} for i in range(5)})
    nodes["review"] = {"job": fn_job(review, name="review"), "needs": ["plan"]}
    result, sink = await run_job(dag(name="d", max_kickbacks=1, nodes=nodes))
    assert result.status.value == "pass"
    assert runs == {"plan": 2, "review": 2, **{f"w{i}": 2 for i in range(5)}}
    assert set(result.outcome.data["nodes"].values()) == {"passed"}
    assert sink.of_type("revision.routed")[0].data["rerun"] == [
        "plan",
        "w0",
        "w1",
        "w2",
        "w3",
        "w4",
        "review",
    ]
