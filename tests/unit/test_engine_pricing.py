"""Cost computed from the genai-prices table and the local override table."""

from __future__ import annotations

import pytest

from loops.engines import pricing
from loops.usage import Usage


def test_known_model_is_priced_with_cached_input_at_its_own_rate():
    usage = Usage(input_tokens=5000, output_tokens=40, cached_input_tokens=3000)
    # gpt-5 list prices: $1.25/M input, $0.125/M cached input, $10/M output.
    assert pricing.cost_usd(usage, "gpt-5", provider_id="openai") == pytest.approx(0.003275)
    assert pricing.prices_version().startswith("genai-prices ")


def test_unknown_model_or_no_model_leaves_the_cost_unknown():
    assert pricing.cost_usd(Usage(10, 1), "no-such-model-xyz", provider_id="openai") is None
    assert pricing.cost_usd(Usage(10, 1), None) is None


def test_override_table_wins_and_zero_usage_costs_nothing():
    overrides = {"house-model": pricing.ModelPrice(2.0, 8.0, cached_input_per_mtok_usd=0.5)}
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_input_tokens=500_000)
    assert pricing.cost_usd(usage, "house-model", overrides=overrides) == pytest.approx(
        1.0 + 0.25 + 8.0
    )
    assert pricing.cost_usd(Usage(), "gpt-5") == 0.0
