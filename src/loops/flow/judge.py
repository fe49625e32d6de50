"""``agent_check``: a separate judge turn decides, fail-closed.

The judge is asked to end its answer with one JSON object::

    {"met": true, "confidence": 0.9, "reason": "..."}

and, with dimensions, a score per dimension::

    {"met": true, "reason": "...",
     "dimensions": {"correctness": {"score": 0.9, "reason": "..."}, "scope": 0.8}}

The last such object in its text counts. None, or an unparsable one, is "not met" and
the judge is not asked again. With dimensions, the confidence is the geometric mean of
the scores (a missing or unreadable score is 0, so one weak dimension drags the verdict
down); without, it is the object's ``confidence`` (missing is 0). The verdict is met
only when the judge says ``"met": true`` and the confidence reaches the threshold.
:func:`judge_verdict` is that decision as a plain function over the judge's text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.engines import base
from loops.flow import paths, turns
from loops.flow.conditions import Condition
from loops.flow.context import Context, EngineSpec
from loops.flow.evidence import ReviewContext
from loops.flow.outcome import Outcome, Verdict

#: default confidence a judge must reach
DEFAULT_THRESHOLD = 0.7
#: characters of the judged outcome's summary put in the judge's prompt
SUMMARY_CHARS = 4000

JUDGE_SYSTEM = (
    "You are an independent judge. You did not do the work you are judging and you "
    "have no stake in it passing. Inspect the working directory yourself; do not "
    "trust the worker's claims. Do not change any file."
)


def last_json_object(text: str, *, key: str = "met") -> dict[str, Any] | None:
    """The last JSON object in ``text`` that has ``key``, or ``None``.

    Objects may be fenced or surrounded by prose; nested objects inside a larger one
    do not count on their own.
    """
    decoder = json.JSONDecoder()
    best: tuple[int, int, dict[str, Any]] | None = None
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and key in value and (best is None or end > best[1]):
            best = (start, end, value)
        start = text.find("{", start + 1)
    return None if best is None else best[2]


def _score(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("score", value.get("confidence"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if 0.0 <= number <= 1.0 else 0.0


def geometric_mean(scores: Sequence[float]) -> float:
    """The geometric mean of scores in 0..1; any zero makes it zero; empty is 0."""
    if not scores or any(s <= 0.0 for s in scores):
        return 0.0
    return math.exp(math.fsum(math.log(s) for s in scores) / len(scores))


def judge_verdict(
    text: str, *, dimensions: Sequence[str] = (), threshold: float = DEFAULT_THRESHOLD
) -> Verdict:
    """Decide from a judge's answer text (fail-closed; see the module docstring)."""
    answer = last_json_object(text)
    if answer is None:
        return Verdict(
            False, "the judge gave no JSON verdict with a 'met' field (fail-closed)", confidence=0.0
        )
    said_met = answer.get("met") is True
    reason = str(answer.get("reason") or "").strip() or "(the judge gave no reason)"
    scores: dict[str, float] = {}
    if dimensions:
        given = answer.get("dimensions")
        given = given if isinstance(given, Mapping) else {}
        scores = {d: _score(given.get(d)) for d in dimensions}
        confidence = geometric_mean(list(scores.values()))
    else:
        confidence = _score(answer.get("confidence"))
    if said_met and confidence < threshold:
        weak = [f"{d}={s:.2f}" for d, s in scores.items() if s < threshold]
        detail = f" (weak: {', '.join(weak)})" if weak else ""
        low = f"confidence {confidence:.2f} < {threshold:.2f}{detail}"
        reason = f"the judge said met, but {low}: {reason}"
    return Verdict(said_met and confidence >= threshold, reason, confidence, dimensions=scores)


PromptPart = str | Callable[[Context, Outcome | None], str]


def judge_prompt(
    question: str,
    dimensions: Sequence[str],
    ctx: Context,
    last: Outcome | None,
    evidence: str = "",
) -> str:
    """The judge's prompt: the question, the evidence at hand, and the answer format."""
    lines = [f"Question: {question}", "", f"The work is in the directory {ctx.cwd}."]
    if evidence:
        lines += ["", "# Evidence", "", evidence]
    if last is not None:
        lines += [
            "",
            f"The worker's last turn ended with status {last.status.value}. Its own",
            "summary (a claim to check, not evidence):",
            last.summary[:SUMMARY_CHARS] or "(none)",
        ]
    lines += ["", "End your answer with one JSON object on its own line, exactly this shape:"]
    if dimensions:
        dims = ", ".join(f'"{d}": {{"score": <0..1>, "reason": "..."}}' for d in dimensions)
        lines.append(f'{{"met": <true|false>, "reason": "...", "dimensions": {{{dims}}}}}')
        lines.append("Score every dimension separately; a dimension you cannot assess scores 0.")
    else:
        lines.append('{"met": <true|false>, "confidence": <0..1>, "reason": "..."}')
    return "\n".join(lines)


class AgentCheck(Condition):
    """A judge agent decides whether the work meets the bar (see the module docstring)."""

    kind: ClassVar[str] = "agent_check"

    def __init__(
        self,
        question: str,
        *,
        dimensions: Sequence[str] = (),
        engine: EngineSpec = None,
        engine_options: Mapping[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        timeout_s: float | None = None,
        context: ReviewContext | None = None,
        name: str | None = None,
    ) -> None:
        if context is not None and not isinstance(context, ReviewContext):
            raise errors.ConstructionError(
                f"agent_check context= takes review_context(...), got {context!r}"
            )
        if not isinstance(question, str) or not question.strip():
            raise errors.ConstructionError(
                "agent_check() needs a question, e.g. 'Is the change complete?'"
            )
        if isinstance(dimensions, str):
            dimensions = [dimensions]
        if len(set(dimensions)) != len(dimensions) or not all(
            isinstance(d, str) and d for d in dimensions
        ):
            raise errors.ConstructionError(
                f"agent_check dimensions={list(dimensions)!r} must be distinct names"
            )
        if not 0.0 <= threshold <= 1.0:
            raise errors.ConstructionError(
                f"agent_check threshold={threshold!r} must be within 0..1"
            )
        self.question = question
        self.dimensions = tuple(dimensions)
        self.engine = engine
        self.engine_options = paths.resolve_options(engine_options)
        self.model = model
        self.system = system
        self.threshold = threshold
        self.timeout_s = timeout_s
        self.context = context
        short = question if len(question) <= 48 else question[:47] + "…"
        self.name = name or f"agent_check({short!r})"

    def fields(self) -> dict[str, Any]:
        """The question, dimensions, threshold and engine."""
        body: dict[str, Any] = {"question": self.question, "threshold": self.threshold}
        if self.dimensions:
            body["dimensions"] = list(self.dimensions)
        if self.engine is not None:
            body["engine"] = self.engine if isinstance(self.engine, str) else self.engine.name
        if self.model is not None:
            body["model"] = self.model
        if self.context is not None:
            body["context"] = self.context.fields()
        return body

    @property
    def wants_diff(self) -> bool:
        """Whether the judge's evidence includes the diff since its loop or dag began."""
        return self.context is not None and self.context.diff

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Run one judge turn and decide from its answer."""
        blocked = turns.budget_block(ctx)
        if blocked is not None:
            return Verdict(False, f"the judge was not asked: {blocked}")
        engine = ctx.run.engine(self.engine, self.engine_options)
        evidence = await self.context.gather(ctx) if self.context is not None else ""
        system = JUDGE_SYSTEM if self.system is None else f"{JUDGE_SYSTEM}\n\n{self.system}"
        request = base.TurnRequest(
            prompt=judge_prompt(self.question, self.dimensions, ctx, last, evidence),
            cwd=ctx.cwd,
            system=system,
            model=self.model,
            permission=base.Permission.READ_ONLY,
            timeout_s=self.timeout_s,
        )
        result = await turns.agent_turn(ctx, engine, request, role="judge")
        if not result.ok:
            error = result.error.message if result.error else result.status.value
            return Verdict(
                False,
                f"the judge's turn failed: {error} (fail-closed)",
                confidence=0.0,
                usage=result.usage,
            )
        verdict = judge_verdict(
            result.final_text, dimensions=self.dimensions, threshold=self.threshold
        )
        return Verdict(
            verdict.met,
            verdict.reason,
            verdict.confidence,
            dimensions=verdict.dimensions,
            usage=result.usage,
        )


def agent_check(
    question: str,
    *,
    dimensions: Sequence[str] = (),
    engine: EngineSpec = None,
    engine_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    system: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    timeout_s: float | None = None,
    context: ReviewContext | None = None,
    name: str | None = None,
) -> Condition:
    """A judge: a separate, read-only agent turn asked ``question`` about the work.

    Args:
        question: what the judge decides, e.g. "Is the change complete and minimal?".
        dimensions: score these separately; confidence is their geometric mean.
        engine: an engine name or object (default: the run's engine).
        engine_options: options for a named engine.
        model: the judge's model (a different one from the worker's is a more
            independent signal).
        system: extra instructions appended to the judge's system prompt.
        threshold: the confidence needed to pass, 0..1.
        timeout_s: wall-clock limit of the judge's turn.
        context: evidence put in the judge's prompt (``review_context(diff=True, ...)``).
        name: the name shown in verdicts.

    Raises:
        ConstructionError: an empty question, duplicate dimensions, a threshold outside 0..1.
    """
    return AgentCheck(
        question,
        dimensions=dimensions,
        engine=engine,
        engine_options=engine_options,
        model=model,
        system=system,
        threshold=threshold,
        timeout_s=timeout_s,
        context=context,
        name=name,
    )
