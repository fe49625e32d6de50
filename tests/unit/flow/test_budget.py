"""Budget arithmetic: limits, spend, chained ledgers."""

from __future__ import annotations

import pytest

from loops import budget, errors
from loops.flow.budget import Budget, Ledger, Spend, exceeded
from loops.usage import Usage


def test_exceeded_names_the_limit_reached():
    assert exceeded(Budget(tokens=100), Spend(tokens=99)) is None
    assert exceeded(Budget(tokens=100), Spend(tokens=100)) == "tokens 100 of 100"
    assert exceeded(Budget(usd=1.0), Spend(usd=1.5)) == "usd 1.5000 of 1.00"
    assert exceeded(Budget(iterations=2), Spend(iterations=2)) == "iterations 2 of 2"
    assert exceeded(Budget(seconds=10), Spend(seconds=12.0)) == "seconds 12.0 of 10"
    assert exceeded(Budget(tokens=5, usd=1.0), Spend(tokens=1, usd=0.1)) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one limit"),
        ({"usd": -1}, "must not be negative"),
        ({"tokens": "many"}, "must be a number"),
        ({"seconds": True}, "must be a number"),
    ],
)
def test_bad_budgets_are_construction_errors(kwargs, message):
    with pytest.raises(errors.ConstructionError, match=message):
        budget(**kwargs)


def test_charges_count_in_every_enclosing_scope_and_checks_find_the_innermost(fake_clock):
    root = Ledger(clock=fake_clock)
    outer = root.child(Budget(tokens=1000), "outer")
    inner = outer.child(Budget(tokens=100), "outer/inner")
    touched = inner.charge(Usage(input_tokens=80, output_tokens=40, cost_usd=0.5))
    assert [t.scope for t in touched] == ["outer/inner", "outer"]
    assert root.spent.tokens == outer.spent.tokens == inner.spent.tokens == 120
    assert root.spent.usd == 0.5
    found = inner.check()
    assert found is not None and found[0] is inner
    assert outer.check() is None  # the inner limit bounds only the inner scope


def test_wall_time_starts_with_the_scope(fake_clock):
    root = Ledger(clock=fake_clock)
    fake_clock.advance(100)
    scoped = root.child(Budget(seconds=10), "s")
    fake_clock.advance(9)
    assert scoped.check() is None
    fake_clock.advance(1)
    found = scoped.check()
    assert found is not None and found[1] == "seconds 10.0 of 10"


def test_iterations_count_up_the_chain(fake_clock):
    root = Ledger(clock=fake_clock)
    scoped = root.child(Budget(iterations=2), "s")
    inner = scoped.child(Budget(tokens=10), "s/i")
    inner.count_iteration()
    scoped.count_iteration()
    assert root.spent.iterations == 2
    found = inner.check()
    assert found is not None and found[0] is scoped
