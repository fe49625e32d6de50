"""The STEP marker parser under arbitrary agent output (hypothesis).

Whatever the text, parsing never raises and returns bounded fields; a well-formed
marker hidden among arbitrary noise lines is found with exactly its fields; and the
markers the worker forwards (only the ``STEP[`` lines of its output) parse exactly as
the whole output does.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loops.queue.steps import (
    MAX_KEY_CHARS,
    MAX_NAME_CHARS,
    MAX_NOTE_CHARS,
    StepStatus,
    parse_markers,
)
from loops.worker.runner import marker_lines

pytestmark = pytest.mark.timeout(120)

#: text the way agents write it: any characters, all the line endings, marker fragments
noise = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        st.sampled_from(
            [
                "\n",
                "\r\n",
                "\r",
                "STEP[",
                "]:",
                " DONE",
                " FAILED",
                "idempotency=",
                " note=",
                "\t",
                "\x00",
                "\u2028",
            ]
        ),
    ),
    max_size=40,
).map("".join)
LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
name = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="]\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() == s and s)
key = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1,
              max_size=40)  # fmt: skip
note = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=80,
).map(str.strip)


@settings(max_examples=400, deadline=None)
@given(noise)
def test_any_text_parses_without_error_into_bounded_fields(text: str) -> None:
    for marker in parse_markers(text):
        assert marker.name and len(marker.name) <= MAX_NAME_CHARS
        assert marker.idempotency_key and len(marker.idempotency_key) <= MAX_KEY_CHARS
        assert len(marker.note) <= MAX_NOTE_CHARS
        assert marker.status in (StepStatus.DONE, StepStatus.FAILED)
        assert "\n" not in marker.name + marker.idempotency_key + marker.note


@settings(max_examples=300, deadline=None)
@given(
    before=noise,
    after=noise,
    name=name,
    key=key,
    note=note,
    status=st.sampled_from(["DONE", "FAILED"]),
)
def test_a_well_formed_marker_among_noise_is_found_with_its_fields(
    before: str, after: str, name: str, key: str, note: str, status: str
) -> None:
    line = f"STEP[{name}]: {status} idempotency={key}" + (f" note={note}" if note else "")
    markers = parse_markers(f"{before}\n{line}\n{after}")
    found = [m for m in markers if m.idempotency_key == key]
    if f"idempotency={key}" in after:  # a later marker with the same key wins
        return
    assert len(found) == 1, (line, markers)
    assert (found[0].name, found[0].status.value, found[0].note) == (name, status, note)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(noise, st.builds(
    lambda n, k: f"STEP[{n}]: DONE idempotency={k} note=ok", name, key)), max_size=8))  # fmt: skip
def test_the_lines_the_worker_forwards_parse_like_the_whole_output(chunks: list[str]) -> None:
    text = "".join(chunks)  # noise runs into markers: separators of every kind
    assert parse_markers("".join(marker_lines(text))) == parse_markers(text)
