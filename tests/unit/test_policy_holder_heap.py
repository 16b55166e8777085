"""The server freezes its long-lived heap; a reload still frees the policy it replaced."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from irl_extproc.server.policy_holder import PolicyHolder, freeze_heap

pytestmark = pytest.mark.unit

POLICY = Path(__file__).parents[1] / "policies" / "basic.yaml"


@pytest.fixture
def policy(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.read_text())
    yield path
    gc.unfreeze()  # leave the test process as it was


def edit(path: Path) -> None:
    path.write_text(path.read_text().replace("max_prompt_chars: 20000", "max_prompt_chars: 19000"))


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_garbage_frozen_by_one_call_is_collected_by_the_next() -> None:
    node = Node()
    kept = weakref.ref(node)
    freeze_heap()
    del node  # unreachable now, but frozen
    gc.collect()
    assert kept() is not None  # frozen objects are out of the collector's reach
    freeze_heap()
    assert kept() is None
    gc.unfreeze()


def test_a_reload_frees_the_replaced_policy_although_the_heap_was_frozen(policy: Path) -> None:
    holder = PolicyHolder(policy)
    freeze_heap()
    assert gc.get_freeze_count() > 0
    replaced = weakref.ref(holder.current)
    edit(policy)
    assert holder.reload()
    freeze_heap()
    assert replaced() is None  # collected, not kept frozen
    assert gc.get_freeze_count() > 0


async def test_watch_calls_on_reload_once_a_new_policy_serves(policy: Path) -> None:
    holder = PolicyHolder(policy)
    first = holder.current.version
    reloaded = asyncio.Event()
    watcher = asyncio.create_task(holder.watch(interval=0.01, on_reload=reloaded.set))
    try:
        edit(policy)
        await asyncio.wait_for(reloaded.wait(), timeout=10)
        assert holder.current.version != first
    finally:
        watcher.cancel()
