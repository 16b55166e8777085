"""Atomic counters with expiry: what budgets and the loop guard keep, whichever backend holds them.

A reservation is *elastic*: each counter grows by ``base + ceil(k * per_unit)`` and the store
grants the largest ``k`` in ``[k_min, k_max]`` that keeps every counter within its limit — all
in one atomic step (a Lua script on Redis). ``k`` is the output-token allowance, so the same
step checks the budget, caps ``max_tokens`` and reserves the spend.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irl_extproc.policy.units import Duration

FailMode = Literal["fail_open", "fail_closed"]


class StoreUnavailable(Exception):
    """The store did not answer in time or at all; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One limited counter a reservation touches."""

    key: str
    limit: int
    base: int  # grows by this whatever k is (the prompt's share)
    per_unit: float  # and by this per granted unit (per output token)
    expire_at: int  # Unix seconds; the counter disappears then


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: int | None  # units granted, None when even k_min does not fit
    used: tuple[int, ...]  # each counter after the reservation, or as found when refused
    amounts: tuple[int, ...]  # what the reservation added to each counter


@dataclass(frozen=True, slots=True)
class Adjustment:
    key: str
    delta: int
    expire_at: int


def amount(spec: CounterSpec, units: int) -> int:
    return spec.base + math.ceil(units * spec.per_unit)


def largest_fit(spec: CounterSpec, used: int, k_max: int) -> int:
    """The most units (≤ k_max) that keep this counter within its limit; negative: not even the base fits.

    ``room / per_unit`` can land one unit off either way in floating point, so the estimate
    is checked against ``amount`` and nudged. The Lua script in ``redis_store`` mirrors this
    arithmetic line for line.
    """
    available = spec.limit - used
    room = available - spec.base
    if spec.per_unit <= 0:
        return k_max if room >= 0 else -1
    units = min(k_max, math.floor(room / spec.per_unit))
    if units >= 0 and amount(spec, units) > available:
        units -= 1
    elif 0 <= units < k_max and amount(spec, units + 1) <= available:
        units += 1
    return units


class CounterStore(Protocol):
    async def reserve(self, counters: Sequence[CounterSpec], k_min: int, k_max: int) -> Reservation: ...

    async def adjust(self, changes: Sequence[Adjustment]) -> None:
        """Add each delta (charge > 0, refund < 0); a refund to a counter already gone is dropped."""
        ...

    async def hit(self, key: str, ttl_seconds: int) -> tuple[int, int]:
        """Count one occurrence; (occurrences in the window, seconds until it resets)."""
        ...

    async def scan(self, prefix: str) -> dict[str, int]:
        """Every live counter under ``prefix``, for ``irl budget show``."""
        ...

    async def close(self) -> None: ...


class StoreConfig(BaseModel):
    """Where counters live. Identical blocks share one client (and one memory store) per process."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["memory", "redis"] = Field(
        "memory", description="memory: this process only; redis: shared by every replica (Redis or Valkey)"
    )
    url: str | None = Field(None, description="redis://host:6379/0, rediss://… or unix:///path?db=0")
    timeout: Duration = Field(0.05, description="each store call; past it the on_error mode applies")
    on_error: FailMode = Field(
        "fail_open",
        description="store down or slow: fail_open lets requests through (counted in metrics and "
        "flagged on the decision), fail_closed refuses them with 503",
    )
    cooldown: Duration = Field(1.0, description="after a store error, skip the store this long (no waits)")
    max_connections: int = Field(64, ge=1, le=4096, description="per process; more calls wait, within timeout")
    key_prefix: str = Field("irl:", pattern=r"^[A-Za-z0-9_.:-]*$")

    @model_validator(mode="after")
    def _url_matches_backend(self) -> StoreConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("backend 'redis' needs a url, e.g. url: redis://127.0.0.1:6379/0")
        if self.backend == "redis" and not str(self.url).startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        if self.backend == "memory" and self.url:
            raise ValueError("backend 'memory' takes no url; set backend: redis to use it")
        return self


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[StoreConfig, CounterStore]] = (
    weakref.WeakKeyDictionary()
)


def load_backend(config: StoreConfig) -> None:
    """Import the backend now: redis-py takes ~0.4 s to import, which the first request must
    not pay inside Envoy's ext_proc message timeout. Called when a policy is compiled."""
    if config.backend == "redis":
        import irl_extproc.budgets.redis_store  # noqa: F401


def open_store(config: StoreConfig) -> CounterStore:
    if config.backend == "redis":
        from irl_extproc.budgets.redis_store import RedisStore

        return RedisStore(config)
    from irl_extproc.budgets.memory import MemoryStore

    return MemoryStore()


def shared_store(config: StoreConfig) -> CounterStore:
    """The process's store for this config on the running loop (Redis clients are loop-bound).

    Sharing survives policy reloads, so a reload neither resets in-memory budgets nor
    opens a second connection pool.
    """
    stores = _SHARED.setdefault(asyncio.get_running_loop(), {})
    if config not in stores:
        stores[config] = open_store(config)
    return stores[config]
