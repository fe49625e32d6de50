"""The sandbox keeps the agent's own installation visible, as written and resolved."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from loops.engines.sandbox import _program_folders


def test_a_virtualenv_python_keeps_the_venv_and_the_script_folder(tmp_path: Path):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    script = tmp_path / "repo" / "agent.py"
    script.parent.mkdir()
    script.write_text("print('hi')\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    folders = _program_folders([str(venv_bin / "python"), str(script), str(secret)])
    assert tmp_path / "venv" in folders  # the link as written, not only its target
    assert Path(sys.executable).resolve().parent.parent in folders
    assert script.parent in folders
    assert not any(secret.is_relative_to(f) for f in folders if f != tmp_path)


def test_arguments_of_a_plain_program_get_no_exception(tmp_path: Path):
    data = tmp_path / "data.txt"
    data.write_text("x")
    folders = _program_folders(["/usr/bin/env", str(data)])
    assert all(not data.is_relative_to(f) for f in folders)


def test_a_scripts_interpreter_is_kept_as_written_and_resolved(tmp_path: Path):
    interp = tmp_path / "tools" / "bin"
    interp.mkdir(parents=True)
    (interp / "python").symlink_to(sys.executable)
    script = tmp_path / "venv" / "bin" / "pytest"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{interp / 'python'}\nprint('hi')\n")
    folders = _program_folders([str(script), "-q"])
    assert tmp_path / "tools" in folders
    assert Path(sys.executable).resolve().parent.parent in folders


def test_an_env_shebang_keeps_the_program_found_on_path(tmp_path: Path):
    script = tmp_path / "bin" / "tool"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/env -S sh -e\necho hi\n")
    found = shutil.which("sh")
    assert found is not None
    assert Path(found).resolve().parent.parent in _program_folders([str(script)])
    binary = tmp_path / "bin" / "blob"
    binary.write_bytes(b"\x7fELF\x00")
    assert _program_folders([str(binary)]) == [tmp_path]


def test_every_link_on_the_way_to_the_interpreter_stays_visible(tmp_path: Path):
    # tools/bin/python -> venv/bin/python -> the real interpreter: the middle link lives
    # in a folder the sandbox hides (a virtualenv under /tmp), so it must be kept too
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    tools_bin = tmp_path / "tools" / "bin"
    tools_bin.mkdir(parents=True)
    (tools_bin / "python").symlink_to("../../venv/bin/python")  # a relative link
    check = tmp_path / "work" / "check"
    check.parent.mkdir()
    check.write_text(f"#!{tools_bin / 'python'}\nprint('ok')\n")
    folders = _program_folders([str(check)])
    assert {tmp_path / "tools", tmp_path / "venv"} <= set(folders)
    assert Path(sys.executable).resolve().parent.parent in folders
