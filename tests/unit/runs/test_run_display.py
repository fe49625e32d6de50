"""`loop run` picks its display: JSON when asked, the TUI on a terminal, plain logs otherwise."""

from __future__ import annotations

import io

from loops.cli.run_display import Display, choose_display


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_tui_is_the_default_on_a_terminal_only():
    assert choose_display(as_json=False, no_tui=False, stream=_Terminal()) is Display.TUI
    assert choose_display(as_json=False, no_tui=False, stream=io.StringIO()) is Display.LOG
    assert choose_display(as_json=False, no_tui=True, stream=_Terminal()) is Display.LOG
    assert choose_display(as_json=True, no_tui=False, stream=_Terminal()) is Display.JSON
