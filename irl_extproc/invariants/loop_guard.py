"""Runaway-agent loops: the same prompt state sent again and again by one tenant is blocked.

The prompt state is the last user message plus the latest tool results, whitespace-normalised
and hashed: an agent that keeps calling the same tool and getting the same answer produces
the same state on every turn, however long its history grows. Only the hash is kept, never
the text.
"""

from __future__ import annotations

import hashlib
import math
from typing import ClassVar

from pydantic import Field

from irl_extproc.budgets import ledger
from irl_extproc.budgets.guard import CounterConfig, CounterGuard
from irl_extproc.budgets.store import StoreUnavailable
from irl_extproc.conversation import Conversation, Segment
from irl_extproc.invariants.base import CheckContext, Finding
from irl_extproc.policy.units import Duration


class LoopGuardConfig(CounterConfig):
    name: ClassVar[str] = "loop_guard"
    max_repeats: int = Field(3, ge=1, description="identical prompt states allowed per window; the next is blocked")
    window: Duration = Field(60.0, description="the window opens at the first occurrence, e.g. '10m'")


def _message_index(segment: Segment) -> int | None:
    """Position of the segment's message in the body (``messages[i]`` / ``input[i]``)."""
    path = segment.path
    return path[1] if len(path) > 1 and isinstance(path[1], int) else None


def prompt_state(conversation: Conversation) -> list[Segment]:
    """The last user message and the latest run of tool-result messages.

    The run is found by message position, not by the model's last turn, because a tool call
    without arguments leaves no text segment to find that turn by.
    """
    segments = conversation.segments
    users = [s for s in segments if s.source == "user"]
    last_user = [s for s in users if s.path[:2] == users[-1].path[:2]] if users else []
    positions = sorted({i for s in segments if s.source == "tool_result" and (i := _message_index(s)) is not None})
    run: set[int] = set()
    for position in reversed(positions):
        if run and position != min(run) - 1:
            break
        run.add(position)
    results = [s for s in segments if s.source == "tool_result" and _message_index(s) in run]
    return last_user + results


def prompt_state_digest(conversation: Conversation) -> str | None:
    state = prompt_state(conversation)
    if not state:
        return None
    digest = hashlib.sha256()
    for segment in state:
        digest.update(f"{segment.source}\x1f{segment.name or ''}\x1f{' '.join(segment.text.split())}\x1e".encode())
    return digest.hexdigest()[:32]


class LoopGuard(CounterGuard[LoopGuardConfig]):
    invariant: ClassVar[str] = "loop_guard"

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        """Repetition is only visible across requests, so offline there is nothing to find."""
        return []

    async def check_async(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        digest = prompt_state_digest(conversation) if conversation.direction == "request" else None
        if digest is None:
            return []
        scope = self.scope(context)
        try:
            count, ttl = await self.store.hit(ledger.loop_key(scope, digest), math.ceil(self.config.window))
        except StoreUnavailable:
            return [self.store_failure(context)]
        if count <= self.config.max_repeats:
            return []
        context.client_headers["retry-after"] = str(ttl)
        self.metrics.refused("loop_guard.repeated_prompt", scope.pool, self.tenant(context))
        message = (
            f"the same prompt state (last user message and tool results) was sent {count} times within "
            f"{self.config.window:g}s: this looks like a runaway agent loop; change the request or retry after {ttl}s"
        )
        return [Finding("loop_guard", "loop_guard.repeated_prompt", self.block_action, message, layer="limit",
                        status=429)]
