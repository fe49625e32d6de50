"""The queue commands through the real ``loop`` entry point on a temp database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from loops.cli.main import cli
from loops.store import sqlfiles


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    for name in ("QUEUE_DB_PATH", "QUEUE_DB_URL", "LOOPS_CONFIG", "QUEUE_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def as_json(result: Result):  # type: ignore[no-untyped-def]
    return json.loads(ok(result))


def test_every_command_has_help(run) -> None:  # type: ignore[no-untyped-def]
    for command in ("db:migrate", "tasks:create", "tasks:create-child", "tasks:get",
                    "tasks:list", "tasks:cancel", "tasks:requeue", "status", "events:tail",
                    "steps:list", "artifacts:list", "responsibilities:list", "tick"):  # fmt: skip
        assert "Usage:" in ok(run(command, "--help"))


def test_migrate_is_idempotent_and_says_what_it_applied(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "Applied 0001_init" in ok(run("db:migrate"))
    assert (tmp_path / "data" / "queue.sqlite").exists()
    assert "Nothing to apply" in ok(run("db:migrate"))
    assert as_json(run("db:migrate", "--json"))["applied"] == []


def test_create_prints_the_bare_task_and_get_shows_counts(run) -> None:  # type: ignore[no-untyped-def]
    task = as_json(run(
        "tasks:create", "--prompt", "Check outstanding tasks and progress one", "--type",
        "maintenance", "--title", "Progress outstanding tasks", "--priority", "2", "--success",
        "one task moved forward", "--check", "pytest -q", "--provider", "mock", "--model", "m",
        "--cwd", "/tmp", "--max-iterations", "4", "--max-attempts", "5", "--min-tests", "2",
        "--idempotency-key", "k1", "--json",
    ))  # fmt: skip
    assert task["status"] == "queued" and task["priority"] == 2 and task["max_attempts"] == 5
    assert (task["check"], task["cwd"], task["min_tests"]) == ("pytest -q", "/tmp", 2)
    assert task["usage"] == {
        "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "cost_usd": None
    }  # fmt: skip
    same = as_json(run("tasks:create", "--prompt", "other", "--idempotency-key", "k1", "--json"))
    assert same["id"] == task["id"]
    child = as_json(run("tasks:create-child", str(task["id"]), "--prompt", "sub", "--json"))
    assert child["parent_id"] == task["id"]
    detail = as_json(run("tasks:get", str(task["id"]), "--json"))
    assert detail["status"] == "waiting_children"
    assert (detail["children_count"], detail["steps_count"], detail["artifacts_count"]) == (1, 0, 0)
    assert "children        1" in ok(run("tasks:get", str(task["id"])))


def test_lists_are_json_arrays_newest_first(run) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        ok(run("tasks:create", "--prompt", f"t{i}"))
    tasks = as_json(run("tasks:list", "--json"))
    assert [t["prompt"] for t in tasks] == ["t2", "t1", "t0"]
    assert len(as_json(run("tasks:list", "--limit", "2", "--json"))) == 2
    assert as_json(run("tasks:list", "--status", "done", "--json")) == []
    table = ok(run("tasks:list"))
    assert table.splitlines()[0].split()[:3] == ["ID", "STATUS", "PRI"]
    events = as_json(run("events:tail", "--limit", "2", "--json"))
    assert [e["type"] for e in events] == ["task.created", "task.created"]
    assert events[0]["id"] < events[1]["id"]
    assert as_json(run("steps:list", "1", "--json")) == []
    assert as_json(run("artifacts:list", "--json")) == []
    assert as_json(run("responsibilities:list", "--json")) == []


def test_status_json_shape(run) -> None:  # type: ignore[no-untyped-def]
    ok(run("tasks:create", "--prompt", "p"))
    status = as_json(run("status", "--json"))
    assert set(status) == {"counts", "leases", "responsibilities_due", "recent_failures"}
    assert status["counts"]["queued"] == 1
    assert "Tasks: queued=1" in ok(run("status"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks:get", "42"], "error: no task with id 42"),
        (["tasks:get", "abc"], "error: no task with id 'abc'"),
        (["tasks:create", "--prompt", "p", "--priority", "9"], "priority must be 1..5, got 9"),
        (["tasks:create"], "prompt is required"),
        (["tasks:list", "--status", "sleeping"], "unknown status 'sleeping'; use one of queued|"),
        (["tasks:cancel", "42"], "no task with id 42"),
        (["steps:list", "42"], "no task with id 42"),
        (["artifacts:list", "--task-id", "42"], "no task with id 42"),
        (["tasks:create-child", "42", "--prompt", "p"], "no task with id 42"),
        (["tasks:list", "--limit", "0"], "limit must be 1..10000"),
        (["events:prune", "--older-than", "soon"], "--older-than: invalid duration 'soon'"),
        (
            ["tasks:create", "--prompt", "p", "--api", "http://127.0.0.1:9"],
            "cannot reach the gateway at http://127.0.0.1:9",
        ),
        (["tasks:create", "--priority", "7", "--api", "http://127.0.0.1:9"], "prompt is required"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(run, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output


def test_events_prune_keeps_recent_events_and_records_itself(run) -> None:  # type: ignore[no-untyped-def]
    ok(run("tasks:create", "--prompt", "p"))
    pruned = as_json(run("events:prune", "--older-than", "1d", "--json"))
    assert pruned["deleted"] == 0 and pruned["before"]
    events = as_json(run("events:tail", "--json"))
    assert [e["type"] for e in events] == ["task.created", "events.pruned"]
    assert events[1]["data"] == pruned
    assert ok(run("events:prune", "--older-than", "30d")).startswith("Deleted 0 events older than")


def test_child_limits_are_enforced(run) -> None:  # type: ignore[no-untyped-def]
    ok(run("tasks:create", "--prompt", "parent"))
    for _ in range(5):
        ok(run("tasks:create-child", "1", "--prompt", "c"))
    full = run("tasks:create-child", "1", "--prompt", "c")
    assert full.exit_code == 1 and "QUEUE_MAX_CHILDREN_PER_TASK=5" in full.output
    deep = run("tasks:create-child", "2", "--prompt", "c")
    assert deep.exit_code == 1 and "QUEUE_MAX_CHILD_DEPTH" in deep.output


def test_cancel_with_children(run) -> None:  # type: ignore[no-untyped-def]
    ok(run("tasks:create", "--prompt", "parent"))
    ok(run("tasks:create-child", "1", "--prompt", "c"))
    assert as_json(run("tasks:cancel", "1", "--json"))["status"] == "cancelled"
    assert as_json(run("tasks:get", "2", "--json"))["status"] == "cancelled"
    again = run("tasks:cancel", "1")
    assert again.exit_code == 1 and "only queued, leased, running" in again.output


def test_requeue_sends_a_blocked_task_back(run) -> None:  # type: ignore[no-untyped-def]
    # the command that `loop approve` on a finished task and the dashboard's Re-queue name
    ok(run("tasks:create", "--prompt", "parent"))
    ok(run("tasks:create-child", "1", "--prompt", "c"))
    ok(run("tasks:cancel", "2"))
    assert as_json(run("tasks:get", "1", "--json"))["status"] == "blocked"
    assert ok(run("tasks:requeue", "1", "--reason", "child fixed")) == "Re-queued task 1\n"
    task = as_json(run("tasks:get", "1", "--json"))
    assert (task["status"], task["attempts"]) == ("queued", 0)
    again = run("tasks:requeue", "1")
    assert again.exit_code == 1
    assert again.output.splitlines() == [
        "error: task 1 is queued; only failed or blocked tasks can be re-queued"
    ]


def test_responsibilities_from_loops_toml_and_tick(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "loops.toml").write_text(
        '[[responsibilities]]\nname = "triage"\nevery = "15m"\n'
        'prompt = "Check outstanding tasks and progress one"\ntype = "maintenance"\n'
    )
    assert "Responsibilities synced: triage" in ok(run("db:migrate"))
    (listed,) = as_json(run("responsibilities:list", "--json"))
    assert listed["name"] == "triage" and listed["schedule"] == "every: 15m"
    assert [r["name"] for r in as_json(run("status", "--json"))["responsibilities_due"]] == [
        "triage"
    ]
    first = as_json(run("tick", "--json"))
    assert first["reclaimed"] == 0
    assert [d["responsibility"] for d in first["dispatched"]] == ["triage"]
    assert first["dispatched"][0]["task"]["type"] == "maintenance"
    assert as_json(run("tick", "--json"))["dispatched"] == []
    (after,) = as_json(run("responsibilities:list", "--json"))
    assert after["last_task_id"] == first["dispatched"][0]["task"]["id"]
    assert after["last_dispatched_at"] is not None


def test_bad_config_exits_2_naming_the_value(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("QUEUE_SQLITE_SYNC", "off")
    result = run("status")
    assert result.exit_code == 2
    assert "QUEUE_SQLITE_SYNC = 'off' is invalid; use one of: full, normal" in result.output


def test_db_flag_and_env_choose_the_file(run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ok(run("tasks:create", "--prompt", "p", "--db", str(tmp_path / "a.sqlite")))
    assert (tmp_path / "a.sqlite").exists()
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "b.sqlite"))
    assert as_json(run("tasks:list", "--json")) == []
    assert len(as_json(run("tasks:list", "--json", "--db", str(tmp_path / "a.sqlite")))) == 1


def test_pending_migrations_are_refused_until_db_migrate(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    ok(run("db:migrate"))
    shipped = sqlfiles.migrations

    version = shipped("loops.store.sql.sqlite")[-1].version + 1
    name = f"{version:04d}_extra"

    def with_extra(package: str) -> list[sqlfiles.Migration]:
        extra = sqlfiles.Migration(version, name, "CREATE TABLE extra (id INTEGER);")
        return [*shipped(package), extra]

    monkeypatch.setattr(sqlfiles, "migrations", with_extra)
    refused = run("tasks:list")
    assert refused.exit_code == 1
    assert f"needs migrations {name}: run `loop db:migrate`" in refused.output
    assert f"Applied {name}" in ok(run("db:migrate"))
    assert "No tasks." in ok(run("tasks:list"))


def test_a_file_that_is_not_a_queue_is_refused(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE something (x)")
    connection.close()
    result = run("tasks:list", "--db", str(other))
    assert result.exit_code == 1 and "run `loop db:migrate`" in result.output


def test_a_command_run_without_loops_toml_leaves_responsibilities_alone(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "loops.toml").write_text(
        '[[responsibilities]]\nname = "triage"\nevery = "1h"\nprompt = "p"\n'
    )
    ok(run("db:migrate"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    db = str(tmp_path / "data" / "queue.sqlite")
    (listed,) = as_json(run("responsibilities:list", "--json", "--db", db))
    assert listed["enabled"] is True
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loops.toml").write_text("")
    (removed,) = as_json(run("responsibilities:list", "--json"))
    assert removed["enabled"] is False


def test_an_unset_notify_secret_stops_only_the_gateway(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A [[notify]] secret_env naming an unset variable: the commands that send no
    notification work; the gateway refuses to start, naming the variable and the fix."""
    (tmp_path / "loops.toml").write_text(
        '[[notify]]\nurl = "https://hooks.example.org/loops"\nsecret_env = "LOOPS_TEST_HOOK_KEY"\n'
    )
    ok(run("tasks:create", "--prompt", "p"))
    assert [t["prompt"] for t in as_json(run("tasks:list", "--json"))] == ["p"]
    assert as_json(run("status", "--json"))["counts"]["queued"] == 1
    gateway = run("gateway", "--port", "0")
    assert gateway.exit_code != 0
    assert "secret_env names LOOPS_TEST_HOOK_KEY, which is not set" in gateway.output
    assert "export LOOPS_TEST_HOOK_KEY=" in gateway.output
    assert "remove secret_env" in gateway.output
    assert "serving" not in gateway.output
