"""Budget and loop_guard blocks in a policy file: accepted as written, refused with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from irl_extproc.invariants.budget import BudgetConfig
from irl_extproc.invariants.loop_guard import LoopGuardConfig
from irl_extproc.policy.load import PolicyError, load_policy
from irl_extproc.policy.resolve import resolve_routes
from tests.budget_helpers import one_route_policy

pytestmark = pytest.mark.unit

GOOD = """\
            - budget:
                per: tenant
                limits:
                  - {window: minute, tokens: 20000}
                  - {window: month, usd: 500}
                  - {window: month, tokens: 9000000}
                  - {window: day, tokens: 100000, model: gpt-4o}
                prices:
                  gpt-4o-mini: {input: 0.15, output: 0.60}
                  gpt-4o*: {input: 2.50, output: 10.00}
                max_tokens: 4096
                rewrites: [{from: gpt-4o, to: gpt-4o-mini, when: exhausted}]
                tenants:
                  free: {limits: [{window: day, tokens: 5000}], denied_models: ['gpt-4o*']}
                store: {backend: redis, url: 'redis://127.0.0.1:6379/0', timeout: 20ms, on_error: fail_closed}
            - loop_guard: {max_repeats: 3, window: 10m, store: {backend: redis, url: 'redis://127.0.0.1:6379/0'}}
"""


def write(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(one_route_policy(entries))
    return path


def test_a_full_budget_block_loads(tmp_path: Path) -> None:
    (route,) = resolve_routes(load_policy(write(tmp_path, GOOD)).document)
    assert route.sentinel is not None
    budget, loop = route.sentinel.request
    assert isinstance(budget, BudgetConfig)
    assert isinstance(loop, LoopGuardConfig)
    assert budget.store.timeout == pytest.approx(0.02)
    assert budget.rewrites[0].source == "gpt-4o"
    assert loop.window == 600.0


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("            - budget: {limits: [{window: day}]}",
         "give 'tokens', 'usd' or both"),
        ("            - budget: {limits: [{window: week, tokens: 5}]}",
         "'minute', 'hour', 'day' or 'month'"),
        ("            - budget: {limits: [{window: day, usd: 5}]}",
         "usd limits need prices"),
        ("            - budget: {limits: [{window: day, tokens: 5}, {window: day, tokens: 9}]}",
         "two day tokens limits for model any; keep one"),
        ("            - budget: {store: {backend: redis}}",
         "backend 'redis' needs a url"),
        ("            - budget: {store: {url: 'redis://x'}}",
         "backend 'memory' takes no url"),
        ("            - loop_guard: {max_repeats: 0}",
         "greater than or equal to 1"),
        ("            - budget: {limit: []}",
         "limit"),
    ],
)
def test_mistakes_are_refused_with_file_line_and_fix(tmp_path: Path, entries: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, entries))
    text = str(info.value)
    assert f"{tmp_path / 'policy.yaml'}:10:" in text
    assert message in text
