"""Counters in this process's memory: one replica, one worker. Atomic because no call awaits."""

from __future__ import annotations

import time
from collections.abc import Sequence

from irl_extproc.budgets.store import Adjustment, CounterSpec, Reservation, amount, largest_fit

_PURGE_EVERY = 1024  # writes between sweeps of expired counters, so memory stays bounded


class MemoryStore:
    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}  # key → (value, expires at, Unix seconds)
        self._writes = 0

    def _get(self, key: str, now: float) -> int:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            return 0
        return entry[0]

    def _set(self, key: str, value: int, expire_at: float) -> None:
        self._values[key] = (value, expire_at)
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            now = time.time()
            self._values = {k: v for k, v in self._values.items() if v[1] > now}

    async def reserve(self, counters: Sequence[CounterSpec], k_min: int, k_max: int) -> Reservation:
        now = time.time()
        used = [self._get(spec.key, now) for spec in counters]
        granted = min((largest_fit(spec, u, k_max) for spec, u in zip(counters, used, strict=True)), default=k_max)
        if granted < k_min:
            return Reservation(None, tuple(used), (0,) * len(counters))
        amounts = tuple(amount(spec, granted) for spec in counters)
        for spec, before, added in zip(counters, used, amounts, strict=True):
            self._set(spec.key, before + added, spec.expire_at)
        return Reservation(granted, tuple(u + a for u, a in zip(used, amounts, strict=True)), amounts)

    async def adjust(self, changes: Sequence[Adjustment]) -> None:
        now = time.time()
        for change in changes:
            live = self._values.get(change.key, (0, 0.0))[1] > now
            if change.delta < 0 and not live:
                continue
            self._set(change.key, self._get(change.key, now) + change.delta, change.expire_at)

    async def hit(self, key: str, ttl_seconds: int) -> tuple[int, int]:
        now = time.time()
        value, expire_at = self._values.get(key, (0, 0.0))
        if expire_at <= now:
            value, expire_at = 0, now + ttl_seconds
        self._set(key, value + 1, expire_at)
        return value + 1, max(1, round(expire_at - now))

    async def scan(self, prefix: str) -> dict[str, int]:
        now = time.time()
        return {k: v for k, (v, expires) in self._values.items() if k.startswith(prefix) and expires > now}

    async def close(self) -> None:
        self._values.clear()
