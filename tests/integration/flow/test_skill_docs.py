"""The guides shipped in loops/skills: every Python example runs, every command exists."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import loops
from loops import Job, run
from loops.cli.main import COMMANDS
from loops.flow import agents, describe, paths

SKILLS = Path(loops.__file__).parent / "skills"
GUIDES = sorted(SKILLS.glob("*/SKILL.md"))
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)


def blocks(kind: str) -> list[tuple[str, str]]:
    out = []
    for guide in GUIDES:
        for number, (lang, code) in enumerate(BLOCK.findall(guide.read_text())):
            if lang == kind:
                out.append((f"{guide.parent.name}#{number}", code))
    return out


def test_the_three_guides_ship_with_front_matter():
    assert [g.parent.name for g in GUIDES] == [
        "author-loop",
        "design-agent-team",
        "supervise-loop-run",
    ]
    for guide in GUIDES:
        text = guide.read_text()
        assert text.startswith(f"---\nname: {guide.parent.name}\ndescription: ")


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_examples_construct_and_run_offline(
    tmp_path: Path, monkeypatch, where: str, code: str
):
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "tdd.md").write_text("Write the failing test first.\n")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "store.md").write_text("You build storage engines.\n")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "example"}
    with paths.loading(tmp_path), agents.collecting() as found:
        exec(compile(code, where, "exec"), namespace)
    assert agents.unknown_skills(found) == []
    job = namespace.get("job")
    if not isinstance(job, Job):
        return
    assert describe.shape(job)["name"]
    if "pytest" in code:  # a real test command in an empty folder: constructing is the check
        return
    result = asyncio.run(run(job, cwd=tmp_path, engine="mock", force_engine=True))
    assert result.status.value == "pass", result.reason


@pytest.mark.parametrize(("where", "code"), blocks("bash"), ids=[w for w, _ in blocks("bash")])
def test_shell_examples_name_real_commands(where: str, code: str):
    for line in code.splitlines():
        if line.startswith("loop "):
            command = line.split()[1]
            assert command in COMMANDS, f"{where}: `loop {command}` does not exist"
