"""Process identity: start times read from /proc, even with odd command names."""

from __future__ import annotations

from pathlib import Path

from loops.runs import process

STAT = "{pid} ({name}) {state} 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 {ticks} 20 21\n"


def _proc(tmp_path: Path, pid: int, name: str, state: str, ticks: int) -> Path:
    folder = tmp_path / str(pid)
    folder.mkdir()
    (folder / "stat").write_text(STAT.format(pid=pid, name=name, state=state, ticks=ticks))
    return tmp_path


def test_start_ticks_survive_spaces_and_parens_in_the_command_name(tmp_path: Path):
    root = _proc(tmp_path, 42, "loop ) run (x", "S", 987654)
    assert process.start_ticks(42, root) == 987654
    assert process.start_ticks(43, root) is None


def test_this_process_is_alive_and_a_foreign_host_cannot_be_checked():
    me = process.current()
    assert process.is_alive(me) is True
    assert process.is_alive(process.ProcessIdentity(me.pid, "another-host", None)) is None
    assert process.is_alive(process.ProcessIdentity(0, me.host, None)) is False
