"""Where prices come from: ``caxton.yaml`` ``usage.prices`` (issue #18)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.usage.model import ModelPrice

if TYPE_CHECKING:
    from caxton.config.model import UsageConfig


def prices_from(config: UsageConfig) -> dict[str, ModelPrice]:
    """``usage.prices`` as :class:`ModelPrice` values, by model name."""
    return {
        model: ModelPrice(
            input=price.input,
            output=price.output,
            cache_read=price.cache_read,
            cache_write=price.cache_write,
        )
        for model, price in config.prices.items()
    }
