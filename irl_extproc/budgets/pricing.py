"""Prices per model, spend in micro-dollars, and token estimates when a provider reports none.

Spend is kept as integer micro-USD: a request's cost is rounded once (≤ $0.0000005 off), and
Redis counters stay exact integers. tokens * (USD per 1M tokens) = micro-USD, conveniently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from irl_extproc.conversation import Conversation

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text; estimates are marked as such


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(ge=0, description="USD per 1M input (prompt) tokens")
    output: float = Field(ge=0, description="USD per 1M output (completion) tokens")


def matches(pattern: str, model: str) -> bool:
    """Exact model name, or a prefix when the pattern ends in '*' (``gpt-4o-*``)."""
    return model.startswith(pattern[:-1]) if pattern.endswith("*") else model == pattern


def any_match(patterns: Iterable[str], model: str) -> bool:
    return any(matches(p, model) for p in patterns)


def price_of(prices: Mapping[str, Price], model: str | None, default: Price | None) -> Price | None:
    """The exact entry, else the longest matching prefix entry, else ``default``."""
    if model is None:
        return default
    if model in prices:
        return prices[model]
    prefixes = [p for p in prices if p.endswith("*") and matches(p, model)]
    return prices[max(prefixes, key=len)] if prefixes else default


def micro_usd(price: Price, input_tokens: int, output_tokens: int) -> int:
    return round(input_tokens * price.input + output_tokens * price.output)


def format_usd(micro: int) -> str:
    return f"{micro / 1_000_000:.6f}"


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def estimate_input_tokens(conversation: Conversation) -> int:
    """Text only: images and audio are not counted, so the exact usage charged later corrects it."""
    return max(1, estimate_tokens(conversation.char_count))
