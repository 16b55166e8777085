"""What an invariant is: a typed config, a check over a Conversation, frozen findings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from irl_extproc.conversation import Conversation, JsonPath

Action = Literal["block", "redact", "monitor"]
Layer = Literal["pattern", "validator", "heuristic", "classifier", "limit", "schema", "context", "normalization"]
BodyEdit = tuple[JsonPath, int | str | bool]  # set this top-level-relative body field to this value


class InvariantConfig(BaseModel):
    """Base of every invariant's policy block. ``action`` is what a finding does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    # A request-side invariant that must see how the exchange ended (``Settling``, e.g. budget):
    # the route then needs the response headers and body even with no response invariants.
    needs_response: ClassVar[bool] = False

    @property
    def prepares_request(self) -> bool:
        """True when the invariant rewrites requests before they go upstream (``prepare``), so a
        route needs the request body even with no request-side invariants (a response canary)."""
        return False
    action: Action = Field("block", description="block the message, redact the span, or only monitor")


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason an invariant fired. Never holds raw content: spans point into segments."""

    invariant: str
    rule: str
    action: Action
    message: str
    layer: Layer = "pattern"
    score: float = 1.0
    threshold: float | None = None
    segment: int | None = None
    start: int | None = None
    end: int | None = None
    replacement: str | None = None  # the text a redaction writes over [start, end)
    status: int | None = None  # HTTP status of a block (429: budget/loop); None: the route's block_status
    edit: BodyEdit | None = None  # a redact-action change to a non-text field (max_tokens cap, model rewrite)


@dataclass(slots=True)
class CheckContext:
    """Per-stream facts and scratch space shared by the request and response checks."""

    route_id: str
    tenant: str | None = None  # from trusted Envoy metadata, never a raw client header
    identity: dict[str, str] = field(default_factory=dict)  # trusted principals: tenant, api_key, team
    request: Conversation | None = None  # on the response side: the request as sent upstream
    state: dict[str, Any] = field(default_factory=dict)  # per-stream memory, keyed by invariant name
    client_headers: dict[str, str] = field(default_factory=dict)  # added to the client's response


class Invariant(Protocol):
    """A compiled invariant: built once per policy load, checked per message.

    Optional hook: ``prepare(conversation, context) -> bool`` runs on requests before the
    checks and may rewrite the body (e.g. adding a canary); it returns True if it did.
    Optional marker: ``whole_response = True`` for invariants that can only judge a complete
    response (json_schema, sql, must-match patterns); a stream is then buffered or checked
    at its end, as ``sentinel.stream_whole_response`` says (docs/streaming.md).
    Optional hook: ``hold(segment, context) -> int``, for streams: the offset in
    ``segment.text`` from which more text could still change the verdict (``len(text)``:
    none). Without it a stream holds its whole window for the invariant.
    """

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]: ...


class AsyncInvariant(Protocol):
    """An invariant that needs I/O (shared budget or loop counters).

    On the request side the processor awaits ``check_async`` *instead of* ``check``
    (``check`` stays the offline, state-free part used by ``irl check``).
    """

    async def check_async(self, conversation: Conversation, context: CheckContext) -> list[Finding]: ...


class Settling(Protocol):
    """A request-side invariant that must hear how the exchange ended (e.g. to charge usage).

    The processor calls ``settle(response, context, completed=True)`` with the decoded
    response (streamed ones included, with their usage), and once more from its stream
    clean-up with ``response=None`` and ``completed`` = the upstream answered 2xx. Only the
    first call counts; ``completed=False`` releases what the request side held.
    """

    async def settle(self, response: Conversation | None, context: CheckContext, *, completed: bool) -> None: ...


def apply_edits(conversation: Conversation, findings: Iterable[Finding]) -> int:
    """Write each finding's ``edit`` into the body (creating objects on the way). Returns the count."""
    applied = 0
    for finding in findings:
        if finding.edit is None or finding.action != "redact" or not isinstance(conversation.body, dict):
            continue
        path, value = finding.edit
        target: Any = conversation.body
        for part in path[:-1]:
            target = target.setdefault(part, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[path[-1]] = value
            applied += 1
    return applied
