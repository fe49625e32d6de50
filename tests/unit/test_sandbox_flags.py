"""The check command's sandbox settings: flags, arguments and the value they build.

Bad values are refused before anything runs, with one line naming the value and the
fix; none of these needs bubblewrap.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from loops import command_succeeds, errors
from loops.cli.main import cli
from loops.engines.sandbox import CHECK_ENV_KEEP, DEFAULT_ENV_KEEP, Sandbox, parse_network
from loops.worker.options import WorkerOptions
from loops.worker.prompts import TurnFacts, turn_prompt


def error_line(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", [["worker"], ["run", "fix it"]])
def test_check_network_without_a_sandbox_is_refused(command: list[str]):
    line = error_line(*command, "--check-network", "none")
    assert "--check-network needs --sandbox bwrap" in line


@pytest.mark.parametrize("command", [["worker"], ["run", "fix it"]])
def test_an_unknown_check_network_is_refused(command: list[str]):
    line = error_line(*command, "--sandbox", "bwrap", "--check-network", "maybe")
    assert "'maybe' is not one of 'shared', 'none'" in line


@pytest.mark.parametrize("command", [["worker"], ["run", "fix it"]])
def test_docker_is_refused_naming_what_is_missing(command: list[str]):
    line = error_line(*command, "--sandbox", "docker")
    assert "docker is not supported: loops has no Docker sandbox" in line
    assert "use bwrap" in line


def test_a_loop_file_takes_its_check_sandbox_from_the_file(tmp_path: Path):
    line = error_line("run", str(tmp_path / "x.loop.py"), "--check-network", "shared")
    assert "command_succeeds(sandbox='bwrap', network=...)" in line


def test_the_help_says_docker_is_not_supported_and_why_the_network_is_cut():
    for command in ("worker", "run"):
        result = CliRunner().invoke(cli, [command, "--help"])
        text = " ".join(result.output.split())
        assert "Docker is not supported" in text
        assert "--check-network [shared|none]" in text
        assert "Default none (cut off)" in text


def test_a_worker_check_runs_in_the_agents_sandbox_with_its_own_network():
    assert WorkerOptions().check_sandbox is None
    cut = WorkerOptions(sandbox=Sandbox()).check_sandbox
    assert cut is not None and cut.network is False
    assert cut.env_keep == CHECK_ENV_KEEP
    shared = WorkerOptions(sandbox=Sandbox(), check_network=True).check_sandbox
    assert shared is not None and shared.network is True


def test_the_check_keeps_no_engine_key_nor_the_queue_token():
    env = {"PATH": "/bin", "ANTHROPIC_API_KEY": "k", "QUEUE_API_TOKEN": "t", "LOOP_TASK_ID": "1"}
    assert Sandbox().filter_env(env).keys() == env.keys()  # the agent keeps them
    assert Sandbox().for_check(network=False).filter_env(env) == {"PATH": "/bin"}
    assert set(CHECK_ENV_KEEP) < set(DEFAULT_ENV_KEEP)


def test_command_succeeds_cuts_the_network_unless_told():
    assert command_succeeds("pytest").describe().get("sandbox") is None
    cut = command_succeeds("pytest", sandbox="bwrap").describe()
    assert (cut["sandbox"], cut["network"]) == ("bwrap", "none")
    shared = command_succeeds("pytest", sandbox="bwrap", network=True).describe()
    assert shared["network"] == "shared"
    own = command_succeeds("pytest", sandbox=Sandbox(network=True), network=False).describe()
    assert own["network"] == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": False}, "needs sandbox='bwrap'"),
        ({"network": True}, "needs sandbox='bwrap'"),
        ({"sandbox": "bwrap", "network": "none"}, "takes network=True (shared) or False"),
        ({"sandbox": "docker"}, "docker is not supported"),
        ({"sandbox": "firejail"}, "unknown sandbox 'firejail'; use one of: none, bwrap"),
    ],
)
def test_command_succeeds_refuses_bad_sandbox_arguments(kwargs: dict, message: str):
    with pytest.raises(errors.ConstructionError, match=re.escape(message)):
        command_succeeds("pytest", **kwargs)


def test_parse_network():
    assert parse_network("shared") is True
    assert parse_network("none") is False
    with pytest.raises(errors.ConfigError, match="unknown check network 'off'"):
        parse_network("off")


def test_the_agent_is_told_when_its_check_runs_without_network():
    offline = turn_prompt(TurnFacts(prompt="fix it", check="pytest -q", check_offline=True))
    assert "`pytest -q` (it runs sandboxed, without network access)" in offline
    plain = turn_prompt(TurnFacts(prompt="fix it", check="pytest -q"))
    assert "`pytest -q`\n" in plain and "network" not in plain


def test_loop_dir_without_a_sandbox_is_refused(tmp_path: Path):
    line = error_line("worker", "--loop-dir", str(tmp_path))
    assert "--loop-dir needs --sandbox bwrap" in line
    with pytest.raises(errors.ConfigError, match="--loop-dir needs --sandbox bwrap"):
        WorkerOptions(loop_dirs=(tmp_path,))
