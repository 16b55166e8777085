"""What an invariant is: a typed config, a check over a Conversation, frozen findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from irl_extproc.conversation import Conversation

Action = Literal["block", "redact", "monitor"]
Layer = Literal["pattern", "validator", "heuristic", "classifier", "limit", "schema", "context"]


class InvariantConfig(BaseModel):
    """Base of every invariant's policy block. ``action`` is what a finding does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
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


@dataclass(slots=True)
class CheckContext:
    """Per-stream facts and scratch space shared by the request and response checks."""

    route_id: str
    tenant: str | None = None  # from trusted Envoy metadata, never a raw client header
    request: Conversation | None = None  # on the response side: the request as sent upstream
    state: dict[str, Any] = field(default_factory=dict)  # per-stream memory, keyed by invariant name
    client_headers: dict[str, str] = field(default_factory=dict)  # added to the client's response


class Invariant(Protocol):
    """A compiled invariant: built once per policy load, checked per message.

    Optional hook: ``prepare(conversation, context) -> bool`` runs on requests before the
    checks and may rewrite the body (e.g. adding a canary); it returns True if it did.
    """

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]: ...
