"""Secrets: provider tokens, private keys, JWTs, URL credentials and random-looking tokens."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from irl_extproc.conversation import Conversation, Segment
from irl_extproc.detect.holdback import secrets_hold
from irl_extproc.detect.secrets import detect_secrets
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import MaskedConfig, in_scope, masked_findings, masker_for


class SecretsConfig(MaskedConfig):
    name: ClassVar[str] = "secrets"
    action: Action = Field("redact", description="redact (default) masks each secret; block or monitor")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="report matches scoring at least this")
    entropy: bool = Field(
        True, description="also flag random-looking tokens that are not words or identifiers (score 0.6)"
    )


class Secrets:
    def __init__(self, config: SecretsConfig) -> None:
        self.config = config
        self._masker = masker_for(config)
        self._hold = secrets_hold(config.entropy)

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c = self.config
        return masked_findings(
            c, self._masker, conversation, context,
            detect=lambda text: detect_secrets(text, c.min_score, c.entropy),
            layer=lambda kind: "heuristic" if kind == "high_entropy" else "pattern",
            threshold=c.min_score,
        )

    def hold(self, segment: Segment, context: CheckContext) -> int:
        return self._hold.hold(segment.text) if in_scope(segment, self.config.sources) else len(segment.text)
