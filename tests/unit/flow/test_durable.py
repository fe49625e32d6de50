"""The shared pieces of durable dags: node orders, node results, finding a node, the book."""

from __future__ import annotations

import dataclasses

import pytest

from loops import dag, errors, fn_job, loop, predicate, run
from loops.flow import durable
from loops.flow.checkpoint import MemoryCheckpointer
from loops.flow.context import GraphPosition
from loops.flow.events import MemorySink
from loops.flow.jobs import Job
from loops.flow.outcome import Finding, Outcome, OutcomeStatus, RevisionRequest, Verdict
from loops.usage import Usage


def test_a_node_order_survives_the_prompt_round_trip() -> None:
    review = Verdict(
        False,
        "tests fail",
        decided_by="review",
        kind="kickback",
        revision=RevisionRequest("build", (Finding("review", "fix it"),), "tests fail"),
    )
    order = durable.NodeOrder(
        run_id="task-1-1",
        path=("ship", "build"),
        trail=(2,),
        iteration=2,
        attempt=3,
        upstream={"plan": Outcome(OutcomeStatus.PASS, "planned", {"n": 1}, Usage(1, 2))},
        last="plan",
        review=review,
        graph=GraphPosition("ship", "build", ("plan",), ("review",)),
    )
    loop_file, back = durable.NodeOrder.from_json(order.to_json("/x/ship.loop.py"))
    assert loop_file == "/x/ship.loop.py"
    assert back.key == "ship/build@2" == order.key
    assert back.upstream["plan"].summary == "planned"
    assert back.upstream["plan"].usage.total_tokens == 3
    assert back.review is not None and back.review.revision is not None
    assert back.review.revision.findings[0].text == "fix it"
    assert back.graph == order.graph
    assert (back.path, back.trail, back.iteration, back.attempt) == (
        order.path, order.trail, order.iteration, order.attempt
    )  # fmt: skip


def test_a_prompt_that_is_not_an_order_is_an_input_error() -> None:
    with pytest.raises(errors.InputError, match="loop-node task's prompt"):
        durable.NodeOrder.from_json("write the docs")
    with pytest.raises(errors.InputError, match="not a dag node's result"):
        durable.outcome_from_result("done")


def test_a_node_result_carries_its_outcome() -> None:
    outcome = Outcome(OutcomeStatus.FAIL, "gate not met", usage=Usage(5, 5))
    back = durable.outcome_from_result(durable.result_text(outcome))
    assert back.status is OutcomeStatus.FAIL
    assert back.summary == "gate not met"
    assert back.usage.total_tokens == 10


def test_find_job_walks_loops_and_dags_by_path() -> None:
    inner = fn_job(lambda ctx: None, name="build")
    root = loop(
        name="outer",
        body=dag(name="ship", nodes={"build": inner}, durable=True),
        until=predicate(lambda ctx, last: True),
        max=2,
    )
    assert durable.find_job(root, ("outer", "ship", "build")) is inner
    with pytest.raises(errors.InputError, match="'outer/ship' has build; was the loop file"):
        durable.find_job(root, ("outer", "ship", "deploy"))
    with pytest.raises(errors.InputError, match="root job is 'outer'"):
        durable.find_job(root, ("other",))


def test_the_book_moves_a_taken_node_to_its_next_attempt() -> None:
    book = durable.Book()
    assert book.attempt("build") == 1
    assert book.attempt("build") == 1  # dispatched, not yet taken: the same child
    book.take("build", 1)
    assert book.attempt("build") == 2  # taken and asked again (a kickback, a retry)
    assert book.attempt("build") == 2


def test_the_book_knows_a_dispatched_attempt_runs_until_it_is_taken() -> None:
    book = durable.Book()
    assert book.running("build") is None
    attempt = book.attempt("build")
    assert book.running("build") is None  # counted, not dispatched yet (a crash between)
    book.dispatch("build", attempt, 7)
    assert book.running("build") == (7, 1)
    book.take("build", attempt)
    assert book.running("build") is None
    book.dispatch("build", book.attempt("build"), 9)
    assert book.running("build") == (9, 2)
    assert dataclasses.asdict(book)["dispatched"] == {"build#2": 9}


def test_durable_must_be_a_bool() -> None:
    with pytest.raises(errors.ConstructionError, match="durable='yes' must be True or False"):
        dag(name="ship", nodes={"a": fn_job(lambda ctx: None)}, durable="yes")  # type: ignore[arg-type]
    shape = dag(name="ship", nodes={"a": fn_job(lambda ctx: None)}, durable=True).shape()
    assert shape["durable"] is True


class Children:
    """A dispatcher whose child tasks finish when the test says (with a pass)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.done: set[int] = set()

    async def dispatch(self, order: durable.NodeOrder) -> int:
        return self.ids.setdefault(f"{order.key}#{order.attempt}", len(self.ids) + 1)

    async def cancel(self, task_id: int, *, reason: str) -> None:
        self.done.add(task_id)

    async def outcome(self, task_id: int) -> Outcome | None:
        return Outcome(OutcomeStatus.PASS, "ok") if task_id in self.done else None


async def turn(job, store: MemoryCheckpointer, children: Children) -> list[tuple[str, str]]:
    """One turn of a durable dag: the node events it recorded, as (type, node)."""
    sink = MemorySink()
    result = await run(job, checkpointer=store, nodes=children, sinks=[sink], run_id="r")
    assert result.status in (OutcomeStatus.PAUSED, OutcomeStatus.PASS), result.reason
    kinds = ("node.started", "node.dispatched", "node.finished", "job.restored")
    return [(e.type.value, e.path.split("/")[-1]) for e in sink.events if e.type.value in kinds]


def line() -> Job:
    work = fn_job(lambda ctx: None, name="work")
    return dag(name="ship", durable=True, nodes={"a": work, "b": {"job": work, "needs": ["a"]}})


async def test_a_turn_records_only_what_it_decided() -> None:
    store, children = MemoryCheckpointer(), Children()
    assert await turn(line(), store, children) == [("node.started", "a"), ("node.dispatched", "a")]
    assert await turn(line(), store, children) == []  # a still runs: nothing new
    children.done.add(children.ids["ship/a#1"])
    assert await turn(line(), store, children) == [
        ("node.finished", "a"),
        ("node.started", "b"),
        ("node.dispatched", "b"),
    ]
    children.done.add(children.ids["ship/b#1"])
    assert await turn(line(), store, children) == [("node.finished", "b")]


async def test_a_turn_after_one_that_died_records_the_nodes_again() -> None:
    """The turn that died may have lost its last events before they reached the timeline."""
    store, children = MemoryCheckpointer(), Children()
    await turn(line(), store, children)
    children.done.add(children.ids["ship/a#1"])
    await turn(line(), store, children)
    assert store.document is not None
    store.document["run"]["status"] = "running"  # it began and never ended
    assert await turn(line(), store, children) == [
        ("node.started", "a"),
        ("job.restored", "a"),
        ("node.finished", "a"),
        ("node.started", "b"),
        ("node.dispatched", "b"),
    ]
    assert await turn(line(), store, children) == []
