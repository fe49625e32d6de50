"""The run view folds a real (mock-engine) run's events into the picture the UI draws."""

from __future__ import annotations

from pathlib import Path

from loops import run
from loops.flow.events import MemorySink
from loops.runs import view as view_mod
from loops.runs.view import NodeState, RunView
from run_helpers import demo_job


async def _view_of(tmp_path: Path, **options) -> RunView:
    sink = MemorySink()
    await run(demo_job(**options), cwd=tmp_path, sinks=[sink])
    view = RunView()
    for event in sink.events:
        view.apply(event.to_dict())
    return view


async def test_tree_states_iterations_verdicts_and_usage(tmp_path: Path):
    view = await _view_of(tmp_path)
    assert view.status == "pass" and view.finished and view.reason == "2 nodes: 2 passed"
    assert view.order[:3] == ["ship", "ship/plan", "ship/impl"]
    assert view.nodes["ship"].children == ["ship/plan", "ship/impl"]
    impl = view.nodes["ship/impl"]
    assert (impl.kind, impl.state, impl.iteration, impl.max_iterations) == (
        "loop", NodeState.PASS, 2, 4,
    )  # fmt: skip
    assert impl.verdict is not None and impl.verdict.met and impl.verdict.slot == "until"
    assert view.iteration() == (2, 4)
    assert (view.tokens, round(view.cost_usd, 4)) == (240, 0.02)
    assert impl.tokens == 240 and view.nodes["ship/impl/agent"].tokens == 240
    budget = view.budgets["ship/impl"]
    assert budget.limits == {"tokens": 5000, "usd": 1} and budget.spent["tokens"] == 240
    assert view.last_outcome is not None and view.last_outcome["path"] == "ship"
    state = view.summary()
    assert state["status"] == "pass" and state["iteration"] == 2 and state["max"] == 4
    assert view.detail()["last_verdict"]["path"] == "ship/impl"


async def test_agent_output_lands_on_its_node(tmp_path: Path):
    view = await _view_of(tmp_path)
    lines = [line.text for line in view.nodes["ship/impl/agent"].output]
    assert "turn 1: editing app.txt" in lines and "ran the tests" in lines
    assert any(text.startswith("→ Write") for text in lines)
    assert view.active_path in ("ship/impl", "ship/impl/agent")
    seqs = [line.seq for node in view.nodes.values() for line in node.output]
    assert len(seqs) == len(set(seqs))


async def test_exhausted_budget_pauses_and_is_marked(tmp_path: Path):
    view = await _view_of(tmp_path, tokens=100, passes_at=9)
    assert view.status == "paused"
    assert view.budgets["ship/impl"].exceeded is not None
    assert view.nodes["ship/impl"].state is NodeState.PAUSED


def test_output_and_memory_stay_bounded_under_a_flood():
    view = RunView()
    view.apply({"type": "run.started", "ts": "t", "run_id": "r", "path": "a", "name": "a"})
    for n in range(20_000):
        text = "x" * 5000 + str(n)
        view.apply({"type": "agent.text", "ts": "t", "run_id": "r", "path": "a/b", "text": text})
    output = view.nodes["a/b"].output
    assert len(output) == view_mod.OUTPUT_LINES_PER_NODE
    assert output[-1].text.endswith("…") and len(output[-1].text) == view_mod.OUTPUT_LINE_CHARS
    assert len(view.nodes) == 2 and view.events_seen == 20_001


def test_unknown_events_only_count():
    view = RunView()
    view.apply({"type": "from.the.future", "ts": "t", "run_id": "r", "path": "x"})
    assert view.events_seen == 1 and view.nodes == {}


def test_seeded_plan_nodes_are_pending_and_events_update_them_in_place():
    view = RunView()
    view.seed(demo_job().shape())
    assert view.order == ["ship", "ship/plan", "ship/impl", "ship/impl/agent"]
    impl = view.nodes["ship/impl"]
    assert (impl.state, impl.kind, impl.max_iterations) == (NodeState.PENDING, "loop", 4)
    view.apply({"type": "job.started", "ts": "t", "run_id": "r", "path": "ship/impl",
                "kind": "loop", "name": "impl"})  # fmt: skip
    assert view.order == ["ship", "ship/plan", "ship/impl", "ship/impl/agent"]
    assert impl.state is NodeState.RUNNING


def test_review_feedback_and_revisions_show_in_the_nodes_output():
    view = RunView()
    base = {"ts": "t", "run_id": "r", "path": "f"}
    view.apply({**base, "type": "surfacing", "severity": "block", "reason": "no tests"})
    view.apply({**base, "type": "revision.emitted", "target": None, "reason": "redo"})
    view.apply({**base, "type": "revision.routed", "target": "f/work", "accepted": True,
                "reason": "threaded into iteration 2"})  # fmt: skip
    assert [line.text for line in view.nodes["f"].output] == [
        "⚑ block: no tests",
        "↺ revision for the next turn: redo",
        "↪ revision routed to f/work: threaded into iteration 2",
    ]
