"""USD cost of token usage for engines whose tool reports tokens but no cost (codex).

Prices come from `genai-prices` (Pydantic's maintained price table, shipped inside
the package, so no network is needed), with an optional override table for models the
snapshot does not know. Its ``input_tokens`` is the whole prompt, cached tokens
included, exactly like our :class:`~loops.usage.Usage`.

Importing genai-prices takes most of a second, so it is imported on first use and
:func:`cost_usd_async` runs the lookup in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping

from loops.usage import Usage

log = logging.getLogger(__name__)

#: prices ``usage`` on ``model``: ``price(usage, model)`` -> USD, or ``None`` when unknown
PriceFn = Callable[[Usage, str | None], Awaitable[float | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's list price in USD per million tokens (an override-table row)."""

    input_per_mtok_usd: float
    output_per_mtok_usd: float
    cached_input_per_mtok_usd: float | None = None

    def cost_usd(self, usage: Usage) -> float:
        """The cost of ``usage`` at these prices (cached input at its own rate)."""
        cached_rate = self.cached_input_per_mtok_usd
        if cached_rate is None:
            cached_rate = self.input_per_mtok_usd
        fresh = usage.input_tokens - usage.cached_input_tokens
        total = (
            fresh * self.input_per_mtok_usd
            + usage.cached_input_tokens * cached_rate
            + usage.output_tokens * self.output_per_mtok_usd
        )
        return total / 1_000_000


@functools.cache
def prices_version() -> str:
    """The genai-prices release the figures come from, recorded with computed costs."""
    import genai_prices

    return f"genai-prices {genai_prices.__version__}"


def cost_usd(
    usage: Usage,
    model: str | None,
    *,
    provider_id: str | None = None,
    overrides: Mapping[str, ModelPrice] | None = None,
) -> float | None:
    """The USD cost of ``usage`` on ``model``, or ``None`` when the price is unknown.

    Args:
        usage: tokens to price (input includes cached input).
        model: the model name as the tool reports it.
        provider_id: genai-prices provider id (e.g. ``"openai"``), to disambiguate.
        overrides: model -> price, consulted before genai-prices.
    """
    if model is None:
        return None
    if overrides and model in overrides:
        return overrides[model].cost_usd(usage)
    if usage.total_tokens == 0:
        return 0.0
    import genai_prices

    try:
        price = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
            ),
            model_ref=model,
            provider_id=provider_id,
        )
    except LookupError:
        log.warning("no price known for model %r; cost left unknown", model)
        return None
    return float(price.total_price)


async def cost_usd_async(
    usage: Usage,
    model: str | None,
    *,
    provider_id: str | None = None,
    overrides: Mapping[str, ModelPrice] | None = None,
) -> float | None:
    """:func:`cost_usd` off the event loop (the first call imports the price table)."""
    return await asyncio.to_thread(
        cost_usd, usage, model, provider_id=provider_id, overrides=overrides
    )


def pricer(
    *, provider_id: str | None = None, overrides: Mapping[str, ModelPrice] | None = None
) -> PriceFn:
    """:func:`cost_usd_async` bound to one engine's provider and override table."""

    async def price(usage: Usage, model: str | None) -> float | None:
        return await cost_usd_async(usage, model, provider_id=provider_id, overrides=overrides)

    return price


async def priced(
    usage: Usage, model: str | None, price: PriceFn | None
) -> tuple[Usage, str | None]:
    """``usage`` with the cost ``price`` computes for it, and that cost's source.

    Returns:
        The usage with ``cost_usd`` set (``None`` when no model, no ``price`` or no
        known price), and ``"computed: genai-prices X.Y.Z"`` when a cost was found,
        else ``None`` (the ``TurnResult.cost_source`` of the turn).
    """
    cost = await price(usage, model) if price is not None and model else None
    if cost is None:
        return dataclasses.replace(usage, cost_usd=None), None
    return dataclasses.replace(
        usage, cost_usd=cost
    ), f"computed: {await asyncio.to_thread(prices_version)}"
