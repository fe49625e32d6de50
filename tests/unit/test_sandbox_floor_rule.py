"""A run's sandbox floor: what a job asks for is kept only where it is stricter.

``Sandbox.within`` is the rule (pure); ``loops.flow.confinement`` applies it to a run
and reports an override once per job in a ``sandbox.floor`` event.
"""

from __future__ import annotations

from pathlib import Path

from loops.engines.sandbox import CHECK_ENV_KEEP, DEFAULT_ENV_KEEP, Sandbox
from loops.flow import budget, confinement
from loops.flow.confinement import SandboxFloor
from loops.flow.context import Context, RunState
from loops.flow.events import Emitter, EventType, MemorySink


def test_a_request_already_within_the_floor_is_kept_as_it_is() -> None:
    floor = Sandbox(network=False)
    asked = Sandbox(network=False, env_keep=("PATH", "HOME"))
    confined, overridden = asked.within(floor)
    assert overridden == ()
    assert confined.env_keep == ("PATH", "HOME") and not confined.network


def test_the_network_is_shared_only_when_both_share_it() -> None:
    confined, overridden = Sandbox(network=True).within(Sandbox(network=False))
    assert not confined.network
    assert overridden == ("network shared (the floor cuts it off)",)
    cut, none = Sandbox(network=False).within(Sandbox(network=True))
    assert not cut.network and none == ()  # stricter than the floor: kept


def test_extra_writable_paths_are_kept_only_inside_the_floors(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "pip").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    floor = Sandbox(writable=(cache,))
    confined, overridden = Sandbox(writable=(cache / "pip", elsewhere)).within(floor)
    assert confined.writable == (cache / "pip",)
    assert overridden == (f"writable {elsewhere}",)
    assert Sandbox(writable=(elsewhere,)).within(Sandbox())[0].writable == ()


def test_environment_is_kept_only_where_the_floor_keeps_it_too() -> None:
    asked = Sandbox(env_keep=("PATH", "ANTHROPIC_API_KEY", "AWS_*", "*"))
    confined, overridden = asked.within(Sandbox(env_keep=CHECK_ENV_KEEP))
    assert confined.env_keep == ("PATH",)
    assert overridden == (
        "environment ANTHROPIC_API_KEY",
        "environment AWS_*",
        "environment *",
    )
    # a plain name one of the floor's patterns keeps is kept; a wider pattern is not
    agent, dropped = Sandbox(env_keep=("ANTHROPIC_API_KEY", "ANTHROPIC*")).within(
        Sandbox(env_keep=DEFAULT_ENV_KEEP)
    )
    assert agent.env_keep == ("ANTHROPIC_API_KEY",) and dropped == ("environment ANTHROPIC*",)


def test_the_hidden_folders_of_both_are_hidden(tmp_path: Path) -> None:
    confined, overridden = Sandbox(hidden=(tmp_path,)).within(Sandbox(hidden=(Path("/root"),)))
    assert confined.hidden == (Path("/root"), tmp_path) and overridden == ()


def _context(floor: SandboxFloor | None) -> tuple[Context, MemorySink]:
    sink = MemorySink()
    state = RunState(run_id="r", cwd=Path("/"), events=Emitter("r", [sink]))
    state.sandbox_floor = floor
    return Context(state, ("job",), budget.Ledger(clock=state.clock)), sink


def test_without_a_floor_each_runs_as_it_asks() -> None:
    ctx, sink = _context(None)
    assert confinement.for_command(ctx, None, subject="c").sandbox is None
    asked = Sandbox(network=True)
    assert confinement.for_agent(ctx, asked, subject="a").sandbox is asked
    assert sink.events == []


def test_a_floor_confines_what_asks_for_nothing_and_reports_an_override_once() -> None:
    floor = SandboxFloor.of(Sandbox(), check_network=False)
    assert floor is not None and floor.check.env_keep == CHECK_ENV_KEEP
    ctx, sink = _context(floor)
    assert confinement.for_agent(ctx, None, subject="a").sandbox == floor.agent
    assert confinement.for_command(ctx, None, subject="c").sandbox == floor.check
    assert sink.events == []  # nothing asked, nothing overridden
    asked = Sandbox().for_check(network=True)
    for _ in range(3):  # a loop's iterations
        confined = confinement.for_command(ctx, asked, subject="command_succeeds(make)")
        assert confined.sandbox is not None and not confined.sandbox.network
        assert confined.overridden == ("network shared (the floor cuts it off)",)
    (event,) = sink.of_type(EventType.SANDBOX_FLOOR.value)
    assert event.path == "job" and event.data["subject"] == "command_succeeds(make)"
    assert event.data["overridden"] == ["network shared (the floor cuts it off)"]
    assert "weaker sandbox than the run's floor" in event.data["reason"]


def test_no_sandbox_makes_no_floor() -> None:
    assert SandboxFloor.of(None, check_network=True) is None
