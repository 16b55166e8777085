"""Secrets: provider tokens, private keys, JWTs, URL credentials and random-looking tokens."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from irl_extproc.conversation import Conversation
from irl_extproc.detect.secrets import detect_secrets
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import MaskedConfig, masker_for, record_score, scoped_texts


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

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c, findings = self.config, []
        for index, segment in scoped_texts(conversation, c.sources):
            for m in detect_secrets(segment.text, c.min_score, c.entropy):
                record_score(context, c.name, m.score)
                findings.append(Finding(
                    invariant=c.name,
                    rule=f"secrets.{m.kind}",
                    action=c.action,
                    message=f"{m.kind} found ({m.rule})",
                    layer="pattern" if m.kind != "high_entropy" else "heuristic",
                    score=m.score,
                    threshold=c.min_score,
                    segment=index,
                    start=m.start,
                    end=m.end,
                    replacement=self._masker.mask(m.kind, segment.text[m.start:m.end], context),
                ))
        return findings
