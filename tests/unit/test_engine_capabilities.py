"""The README's engine tables are generated from the code and must be up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import errors
from loops.engines import REGISTRY, base, capabilities

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_match_the_code():
    text = README.read_text()
    assert capabilities.markdown() in text, (
        "the README's engine tables are out of date: run "
        "`python -m loops.engines.capabilities --write README.md`"
    )


def test_every_registered_engine_has_a_row_and_every_agent_engine_notes_each_level():
    table = capabilities.capability_table()
    for name in REGISTRY:
        assert f"| `{name}` |" in table
    for name in capabilities.AGENT_ENGINES:
        notes = capabilities.permission_notes(name)
        assert set(notes) == set(base.Permission), name


def test_a_changed_capability_changes_the_table(monkeypatch: pytest.MonkeyPatch):
    from loops.engines.gemini import GeminiEngine

    before = capabilities.capability_table()
    monkeypatch.setattr(GeminiEngine, "capabilities", base.Capabilities(resume=False))
    assert capabilities.capability_table() != before


def test_write_replaces_only_the_block(tmp_path: Path):
    target = tmp_path / "README.md"
    target.write_text(f"intro\n{capabilities.START}\nstale\n{capabilities.END}\noutro\n")
    assert capabilities.main(["--write", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert "stale" not in text and capabilities.markdown() in text
    target.write_text("no markers")
    with pytest.raises(errors.ConfigError, match="no"):
        capabilities.main(["--write", str(target)])
