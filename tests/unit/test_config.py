"""Settings: defaults -> loops.toml -> environment -> flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import config, errors


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    s = config.load_settings(env={}, cwd=tmp_path)
    assert s.queue.db_path == tmp_path / "data" / "queue.sqlite"
    assert (s.queue.sqlite_sync, s.queue.lease_ttl_ms, s.queue.max_attempts) == ("full", 120_000, 3)
    assert (s.queue.max_child_depth, s.queue.max_children_per_task) == (1, 5)
    assert (s.api.host, s.api.port, s.api.token, s.api.max_body_bytes) == (
        "127.0.0.1", 7070, None, 1_048_576
    )  # fmt: skip
    assert s.worker.api_base_url == "http://127.0.0.1:7070"
    assert (s.worker.poll_ms, s.worker.lease_ttl_ms, s.worker.shutdown_grace_ms) == (
        2000, 120_000, 10_000
    )  # fmt: skip
    assert s.home == Path("~/.loops").expanduser()
    assert s.config_path is None and s.responsibilities == ()
    assert s.queue.db_url is None


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    write(tmp_path / "loops.toml", '[queue]\nmax_attempts = 4\nlease_ttl_ms = 500\n'
          'db_path = "q.sqlite"\n[api]\nport = 8080\n')  # fmt: skip
    s = config.load_settings(env={"QUEUE_MAX_ATTEMPTS": "6"}, cwd=tmp_path)
    assert (s.queue.max_attempts, s.queue.lease_ttl_ms, s.api.port) == (6, 500, 8080)
    assert s.queue.db_path == tmp_path / "q.sqlite"
    flagged = config.load_settings(
        env={"QUEUE_MAX_ATTEMPTS": "6"}, cwd=tmp_path,
        overrides={"queue.max_attempts": 9, "queue.db_path": None},
    )  # fmt: skip
    assert flagged.queue.max_attempts == 9 and flagged.queue.db_path == tmp_path / "q.sqlite"


def test_loops_config_env_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "other.toml", '[queue]\nsqlite_sync = "normal"\n')
    s = config.load_settings(env={"LOOPS_CONFIG": str(tmp_path / "other.toml")}, cwd=tmp_path)
    assert s.queue.sqlite_sync == "normal"
    with pytest.raises(errors.ConfigError, match="no such file"):
        config.load_settings(env={"LOOPS_CONFIG": "missing.toml"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"QUEUE_SQLITE_SYNC": "off"},
            "QUEUE_SQLITE_SYNC = 'off' is invalid; use one of: full, normal",
        ),
        ({"QUEUE_MAX_ATTEMPTS": "0"}, "QUEUE_MAX_ATTEMPTS = '0' is invalid; use an integer >= 1"),
        ({"QUEUE_API_PORT": "99999"}, "use an integer 1..65535"),
        ({"QUEUE_LEASE_TTL_MS": "ten"}, "QUEUE_LEASE_TTL_MS"),
        ({"QUEUE_DB_URL": "mysql://x"}, "postgresql://"),
        ({"WORKER_API_BASE_URL": "localhost:7070"}, "http://"),
    ],
)
def test_invalid_values_name_the_setting_and_allowed_values(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.load_settings(env=env, cwd=tmp_path)
    assert message in info.value.message


def test_responsibilities_from_toml(tmp_path: Path) -> None:
    write(
        tmp_path / "loops.toml",
        """
[[responsibilities]]
name = "triage"
every = "15m"
prompt = "Check outstanding tasks and progress one"
type = "maintenance"
priority = 2

[[responsibilities]]
name = "nightly"
cron = "0 3 * * *"
prompt = "Update dependencies"
""",
    )
    s = config.load_settings(env={}, cwd=tmp_path)
    triage, nightly = s.responsibilities
    assert (triage.name, triage.schedule.every_s, triage.template.priority) == ("triage", 900, 2)
    assert triage.template.type == "maintenance"
    assert nightly.schedule.cron == "0 3 * * *" and nightly.template.type == "maintenance"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[responsibilities]]\nname = "a"\nprompt = "p"\n', "exactly one of every"),
        (
            '[[responsibilities]]\nname = "a"\nevery = "1h"\ncron = "* * * * *"\nprompt = "p"\n',
            "exactly one of every",
        ),
        ('[[responsibilities]]\nname = "a"\nevery = "soon"\nprompt = "p"\n', "invalid duration"),
        ('[[responsibilities]]\nname = "a"\ncron = "nope"\nprompt = "p"\n', "invalid cron"),
        ('[[responsibilities]]\nname = "a"\nevery = "1h"\n', "needs a prompt"),
        ('[[responsibilities]]\nevery = "1h"\nprompt = "p"\n', "needs a name"),
        (
            '[[responsibilities]]\nname = "a"\nevery = "1h"\nprompt = "p"\npriority = 7\n',
            "priority",
        ),
        (
            '[[responsibilities]]\nname = "a"\nevery = "1h"\nprompt = "p"\nwhen = 1\n',
            "unknown key(s) when",
        ),
        ('[[responsibilities]]\nname = "a"\nevery = "1h"\nprompt = "p"\n' * 2, "defined twice"),
        ("[queue]\nmax_attempt = 3\n", "unknown setting queue.max_attempt"),
        ("colour = 1\n", "unknown key 'colour'"),
        ("not = [valid\n", "not valid TOML"),
    ],
)
def test_bad_toml_is_a_config_error(tmp_path: Path, toml: str, message: str) -> None:
    write(tmp_path / "loops.toml", toml)
    with pytest.raises(errors.ConfigError) as info:
        config.load_settings(env={}, cwd=tmp_path)
    assert message in info.value.message


def test_token_is_not_in_repr(tmp_path: Path) -> None:
    s = config.load_settings(env={"QUEUE_API_TOKEN": "sekrit"}, cwd=tmp_path)
    assert s.api.token == "sekrit" and "sekrit" not in repr(s)
