"""describe: a JSON tree of name/kind/children plus own fields, and a text form."""

from __future__ import annotations

from loops import (
    agent_check,
    agent_job,
    budget,
    command_succeeds,
    dag,
    fn_job,
    gate_job,
    loop,
    quorum,
    unchanged,
)
from loops.flow import describe


def build():
    review = gate_job("review", quorum(1, agent_check("Safe?"), agent_check("Correct?")))
    team = dag(
        name="team",
        nodes={
            "impl": loop(
                name="impl-loop",
                body=agent_job("Build it.", engine="mock", model="m1"),
                until=[command_succeeds("pytest", ["-q"], min_tests=1), unchanged("tests/**")],
                max=4,
                budget=budget(usd=2),
            ),
            "review": {"job": review, "needs": ["impl"], "optional": True},
            "notes": {"job": fn_job(lambda c: None, name="notes"), "when": lambda c: True},
        },
        concurrency=2,
    )
    return loop(name="root", body=team, until=agent_check("Done?", dimensions=["a", "b"]), max=2)


def test_json_tree_has_names_kinds_children_and_own_fields():
    tree = describe.shape(build())
    assert (tree["name"], tree["kind"], tree["max"]) == ("root", "loop", 2)
    assert tree["until"]["kind"] == "agent_check" and tree["until"]["dimensions"] == ["a", "b"]
    team = tree["children"][0]
    assert (team["name"], team["kind"], team["concurrency"], team["role"]) == (
        "team",
        "dag",
        2,
        "body",
    )
    impl, review, notes = team["children"]
    assert (impl["name"], impl["kind"], impl["job"], impl["needs"], impl["max"]) == (
        "impl",
        "loop",
        "impl-loop",
        [],
        4,
    )
    assert impl["budget"] == {"usd": 2}
    assert [m["kind"] for m in impl["until"]["members"]] == ["command_succeeds", "unchanged"]
    assert impl["until"]["members"][0]["argv"] == ["pytest", "-q"]
    agent = impl["children"][0]
    assert (agent["kind"], agent["engine"], agent["model"], agent["children"]) == (
        "agent",
        "mock",
        "m1",
        [],
    )
    assert review["optional"] is True and review["needs"] == ["impl"]
    assert review["condition"]["kind"] == "quorum" and review["condition"]["k"] == 1
    assert notes["when"]["kind"] == "predicate"


def test_text_form_is_an_indented_tree():
    text = describe.to_text(build())
    lines = text.splitlines()
    assert lines[0] == "loop root  max=2"
    assert "  dag team  concurrency=2" in lines
    assert any(line.startswith("    loop impl  max=4") for line in lines)
    assert "          command_succeeds(pytest -q)" in lines
