"""What the live UI draws, as Rich text built from a :class:`~loops.runs.view.RunView`.

Pure functions (no widgets), so the drawing is tested without a terminal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from loops.runs import view as view_mod

#: state -> (symbol, style)
STATE_MARKS: Mapping[str, tuple[str, str]] = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold yellow"),
    "pass": ("✔", "bold green"),
    "fail": ("✘", "bold red"),
    "error": ("!", "bold red"),
    "paused": ("‖", "bold magenta"),
    "skipped": ("-", "dim"),
    "dead": ("☠", "bold red"),
}

#: output line kind -> style
OUTPUT_STYLES: Mapping[str, str] = {
    "text": "",
    "tool": "cyan",
    "result": "dim",
    "info": "bold blue",
}

BAR_WIDTH = 24


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def node_label(node: view_mod.NodeView, *, reason_width: int = 48) -> Text:
    """One tree line: state mark, name, kind, iteration/max, last verdict and reason."""
    symbol, style = STATE_MARKS.get(node.state.value, ("?", ""))
    label = Text()
    label.append(f"{symbol} ", style=style)
    label.append(node.name, style="bold")
    if node.kind:
        label.append(f" {node.kind}", style="dim")
    if node.iteration is not None:
        maximum = node.max_iterations if node.max_iterations is not None else "?"
        label.append(f" {node.iteration}/{maximum}", style="yellow")
    if node.verdict is not None:
        met = node.verdict.met
        label.append(
            f"  {node.verdict.slot} {'met' if met else 'not met'}",
            style="green" if met else "red",
        )
        if node.verdict.reason:
            label.append(f": {_short(node.verdict.reason, reason_width)}", style="dim")
    elif node.summary and node.state.value not in ("running", "pending"):
        label.append(f"  {_short(node.summary, reason_width)}", style="dim")
    return label


def bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    """A horizontal bar filled to ``fraction`` (0..1, clamped), red when full."""
    part = max(0.0, min(1.0, fraction))
    filled = round(part * width)
    style = "red" if part >= 1.0 else ("yellow" if part >= 0.8 else "green")
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    return text


def _measure(name: str, spent: Any, limit: Any) -> Text:
    line = Text(f"{name:<7}")
    spent_value = float(spent or 0)
    line.append_text(bar(spent_value / float(limit) if limit else 0.0))
    if name == "usd":
        line.append(f" ${spent_value:.4f} / ${float(limit):.2f}")
    else:
        line.append(f" {spent_value:g} / {float(limit):g}")
    return line


def budget_lines(view: view_mod.RunView) -> Text:
    """Tokens and USD (and the other measures) against each budget, as bars."""
    out = Text()
    out.append("usage   ", style="bold")
    out.append(f"{view.tokens:,} tokens · ${view.cost_usd:.4f}\n")
    if not view.budgets:
        out.append("no budget set", style="dim")
        return out
    for budget in view.budgets.values():
        out.append(f"budget {budget.scope or 'run'}", style="bold")
        if budget.exceeded:
            out.append(f"  exceeded: {budget.exceeded}", style="bold red")
        out.append("\n")
        for name in ("tokens", "usd", "iterations", "seconds"):
            if name in budget.limits:
                out.append_text(_measure(name, budget.spent.get(name), budget.limits[name]))
                out.append("\n")
    out.rstrip()
    return out


def _parse(ts: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def elapsed_s(view: view_mod.RunView, now: dt.datetime) -> float:
    """Seconds the run has been going (or went, once finished)."""
    if view.duration_s is not None:
        return view.duration_s
    started = _parse(view.started_ts) if view.started_ts else None
    if started is None:
        return 0.0
    end = _parse(view.finished_ts) if view.finished_ts else None
    return max(0.0, ((end or now) - started).total_seconds())


def format_elapsed(seconds: float) -> str:
    """``h:mm:ss``."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def header(view: view_mod.RunView, now: dt.datetime, *, state: str | None = None) -> Text:
    """The top line: title, run id, state, iteration, elapsed time, event count."""
    shown = state or view.status
    symbol, style = STATE_MARKS.get(shown, ("?", ""))
    text = Text()
    text.append(f" {view.title or '…'} ", style="bold reverse")
    text.append(f" {view.run_id} ", style="dim")
    text.append(f" {symbol} {shown} ", style=style)
    iteration, maximum = view.iteration()
    if iteration is not None:
        text.append(f" iteration {iteration}/{maximum if maximum is not None else '?'} ")
    text.append(f" elapsed {format_elapsed(elapsed_s(view, now))} ")
    text.append(f" {view.events_seen:,} events", style="dim")
    if view.finished and view.reason:
        text.append(f"\n {_short(view.reason, 200)}", style=style)
    return text


def output_line(line: view_mod.OutputLine) -> Text:
    """One line of a node's output, styled by its kind."""
    return Text(line.text, style=OUTPUT_STYLES.get(line.kind, ""))


def node_detail(node: view_mod.NodeView | None) -> Text:
    """The selected node's heading: path, state, usage, last verdict with its full reason."""
    if node is None:
        return Text("no node selected", style="dim")
    symbol, style = STATE_MARKS.get(node.state.value, ("?", ""))
    text = Text()
    text.append(f"{symbol} {node.path}", style=style)
    text.append(f"  {node.kind or '?'} · {node.tokens:,} tok · ${node.cost_usd:.4f}", style="dim")
    if node.verdict is not None:
        met = "met" if node.verdict.met else "not met"
        text.append(f"\n{node.verdict.slot} {met}: ", style="green" if node.verdict.met else "red")
        text.append(_short(node.verdict.reason, 400))
    return text
