"""Size and model limits on a request."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import Action, CheckContext, Finding, InvariantConfig


class LimitsConfig(InvariantConfig):
    name: ClassVar[str] = "limits"
    max_prompt_chars: int | None = Field(None, gt=0, description="total characters across all text parts")
    max_messages: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0, description="ceiling on the requested max_tokens")
    allowed_models: list[str] | None = Field(None, min_length=1)
    denied_models: list[str] | None = None


class Limits:
    def __init__(self, config: LimitsConfig) -> None:
        self.config = config

    def _finding(self, rule: str, message: str) -> Finding:
        # Limits cannot be redacted away: a redact action still blocks.
        action: Action = "monitor" if self.config.action == "monitor" else "block"
        return Finding(invariant="limits", rule=f"limits.{rule}", action=action, message=message, layer="limit")

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c, findings = self.config, []
        chars = conversation.char_count
        if c.max_prompt_chars is not None and chars > c.max_prompt_chars:
            findings.append(self._finding("max_prompt_chars", f"{chars} characters > {c.max_prompt_chars}"))
        messages = len({s.path[:2] for s in conversation.segments})
        if c.max_messages is not None and messages > c.max_messages:
            findings.append(self._finding("max_messages", f"{messages} messages > {c.max_messages}"))
        if c.max_tokens is not None and (conversation.max_tokens or 0) > c.max_tokens:
            findings.append(self._finding("max_tokens", f"max_tokens {conversation.max_tokens} > {c.max_tokens}"))
        model = conversation.model
        if c.allowed_models is not None and model not in c.allowed_models:
            findings.append(self._finding("allowed_models", f"model {model!r} is not in allowed_models"))
        if c.denied_models and model in c.denied_models:
            findings.append(self._finding("denied_models", f"model {model!r} is denied"))
        return findings
