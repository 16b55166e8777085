"""`irl budget show`: current spend per pool, principal and window, read from the budget store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from irl_extproc.budgets import windows
from irl_extproc.budgets.ledger import BudgetLimit, CounterKey, parse_budget_key
from irl_extproc.budgets.pricing import format_usd
from irl_extproc.budgets.store import StoreConfig, StoreUnavailable, open_store
from irl_extproc.invariants.budget import BudgetConfig
from irl_extproc.policy.load import PolicyError, load_policy
from irl_extproc.policy.resolve import resolve_routes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("budget", help="inspect token and spend budgets")
    actions = parser.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="current spend per pool, tenant (or key/team) and window")
    show.add_argument("--policy", required=True, help="the policy whose budgets to show")
    show.add_argument("--tenant", help="only this principal (tenant, hashed API key or team)")
    show.add_argument("--pool", help="only this pool (default pools are service names)")
    show.add_argument("--all-windows", action="store_true", help="include past windows not yet expired")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(func=run)


@dataclass(frozen=True)
class Row:
    key: CounterKey
    used: int
    limit: int | None

    def as_dict(self) -> dict[str, Any]:
        k = self.key
        started = datetime.fromtimestamp(k.start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        row: dict[str, Any] = {"pool": k.pool, "per": k.per, "principal": k.principal, "window": k.window,
                               "start": started, "metric": k.metric, "model": k.model or "*"}
        show = format_usd if k.metric == "usd" else str
        row["used"] = show(self.used)
        row["limit"] = show(self.limit) if self.limit is not None else "-"
        row["remaining"] = show(max(0, self.limit - self.used)) if self.limit is not None else "-"
        return row


def _budgets(policy: str) -> list[tuple[str, BudgetConfig]]:
    """(pool, config) for every budget entry in the policy, with the default pool resolved."""
    found = []
    for route in resolve_routes(load_policy(policy).document):
        sentinel = route.sentinel
        for config in (*sentinel.request, *sentinel.response) if sentinel else ():
            if isinstance(config, BudgetConfig):
                found.append((config.pool or route.service, config))
    return found


def _limit_of(key: CounterKey, budgets: list[tuple[str, BudgetConfig]]) -> int | None:
    for pool, config in budgets:
        if pool != key.pool or config.per != key.per:
            continue
        rules = config.tenants.get(key.principal) if key.per == "tenant" else None
        limits: list[BudgetLimit] = rules.limits if rules and rules.limits is not None else config.limits
        for limit in limits:
            amount = getattr(limit, key.metric, None) if key.metric in ("tokens", "usd") else None
            if limit.window == key.window and limit.model == key.model and amount is not None:
                return round(amount * 1_000_000) if key.metric == "usd" else int(amount)
    return None


async def _rows(store_config: StoreConfig, budgets: list[tuple[str, BudgetConfig]]) -> list[Row]:
    store = open_store(store_config)
    try:
        counters = await store.scan(store_config.key_prefix + "b:")
    finally:
        await store.close()
    rows = []
    for raw, used in counters.items():
        key = parse_budget_key(store_config.key_prefix, raw)
        if key is not None:
            rows.append(Row(key, used, _limit_of(key, budgets)))
    return rows


def _current(row: Row, now: float) -> bool:
    window = row.key.window
    return window in windows.WINDOWS and windows.bounds(window, now)[0] == row.key.start


def run(args: argparse.Namespace) -> int:
    try:
        budgets = _budgets(args.policy)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not budgets:
        print(f"{args.policy}: no budget invariants", file=sys.stderr)
        return 0
    rows: list[Row] = []
    for store_config in dict.fromkeys(config.store for _, config in budgets):
        if store_config.backend == "memory":
            print("note: a memory store lives inside each `irl serve` process and cannot be read from here; "
                  "use backend: redis to share and inspect budgets", file=sys.stderr)
            continue
        try:
            rows += asyncio.run(_rows(store_config.model_copy(update={"timeout": max(store_config.timeout, 2.0)}),
                                      budgets))
        except StoreUnavailable as exc:
            print(f"error: {store_config.url}: {exc}", file=sys.stderr)
            return 1
    now = time.time()
    rows = [r for r in rows if (args.all_windows or _current(r, now))
            and args.tenant in (None, r.key.principal) and args.pool in (None, r.key.pool)]
    rows.sort(key=lambda r: (r.key.pool, r.key.principal, windows.WINDOWS.index(r.key.window)
                             if r.key.window in windows.WINDOWS else 9, r.key.metric, r.key.model or ""))
    _print([r.as_dict() for r in rows], as_json=args.json)
    return 0


def _print(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return
    columns = ["pool", "per", "principal", "window", "start", "metric", "model", "used", "limit", "remaining"]
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
