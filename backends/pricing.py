"""Cost in USD from token counts, for the CLIs that report tokens but no cost.

A price is the config's `prices` entry for a model: USD per million tokens for `input`,
`output`, `cache_read` and `cache_write`. Usage counts input without cache reads (see
gitswarm.model.Usage), so each kind of token is priced once.
"""

from __future__ import annotations

from typing import Mapping

from gitswarm.model import Usage

PER = 1_000_000


def cost_usd(usage: Usage, price: Mapping[str, float] | None) -> float:
    """What `usage` costs at `price`; 0.0 when there is no price."""
    if not price:
        return 0.0
    inp = float(price.get("input", 0.0))
    total = (usage.input_tokens * inp
             + usage.output_tokens * float(price.get("output", 0.0))
             + usage.cache_read_tokens * float(price.get("cache_read", inp))
             + usage.cache_write_tokens * float(price.get("cache_write", inp)))
    return round(total / PER, 9)


def priced(usage: Usage, price: Mapping[str, float] | None) -> Usage:
    """`usage` with its cost computed from `price`, unless the CLI reported one."""
    if usage.cost_usd or not price:
        return usage
    return Usage(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
                 cost_usd(usage, price))


__all__ = ["cost_usd", "priced"]
