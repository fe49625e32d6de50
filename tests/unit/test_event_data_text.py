"""The stored text of event data, and the lease nonces drawn in one read."""

from __future__ import annotations

import json
import re

import pytest

from loops.queue import events
from loops.store import shared


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"worker": "w1", "attempt": 3},
        {"status": "done"},
        {"error": 'quote " backslash \\ tab \t nul \x00 é 中 \u2028 😀', "n": None},
        {"nested": {"list": [1, 2.5, True, False, None, "x"]}, "big": 2**70, "f": 1e-7},
        {"nan": float("nan"), "inf": float("inf"), 7: "an int key"},
    ],
)
def test_event_data_text_is_what_json_dumps_writes(data: dict) -> None:
    assert events.data_text(data) == json.dumps(data)


def test_event_data_text_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        events.data_text({"x": object()})


def test_nonces_drawn_together_look_like_single_ones() -> None:
    nonces = shared._new_nonces(64)
    assert len(nonces) == 64 and len(set(nonces)) == 64
    single = shared._new_nonce()
    assert all(re.fullmatch(r"[0-9a-f]{16}", n) for n in [*nonces, single])
