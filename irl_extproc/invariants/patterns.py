"""Output patterns: text that must appear and text that must not, on RE2."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from irl_extproc.conversation import Conversation, Segment, Source
from irl_extproc.detect.prefix import re2_tail
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import ScopedConfig, in_scope, scoped_texts, unredactable
from irl_extproc.invariants.deny_patterns import compile_re2


class PatternsConfig(ScopedConfig):
    name: ClassVar[str] = "patterns"
    sources: list[Source] | None = Field(["assistant"], min_length=1,  # type: ignore[assignment]
                                         description="parts to check (default: the assistant's text)")
    must_match: list[str] = Field(default_factory=list, description="RE2 patterns every checked text must contain")
    must_not_match: list[str] = Field(default_factory=list, description="RE2 patterns no checked text may contain")
    replacement: str = "[REMOVED]"
    action: Action = "block"

    @field_validator("must_match", "must_not_match")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_re2(pattern)
        return patterns

    @model_validator(mode="after")
    def _something(self) -> PatternsConfig:
        if not self.must_match and not self.must_not_match:
            raise ValueError("give at least one pattern in must_match or must_not_match")
        return self


class Patterns:
    def __init__(self, config: PatternsConfig) -> None:
        self.config = config
        self._must = [compile_re2(p) for p in config.must_match]
        self._must_not = [compile_re2(p) for p in config.must_not_match]
        # "Must contain" can only be judged on the complete text: a stream is checked at its end
        # (docs/streaming.md); must_not_match alone is checked in flight.
        self.whole_response = bool(config.must_match)
        self._tail = re2_tail(config.must_not_match)  # None: a pattern without a prefix form

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c, findings = self.config, []
        for index, segment in scoped_texts(conversation, c.sources):
            for number, regex in enumerate(self._must):
                if regex.search(segment.text) is None:
                    findings.append(Finding(c.name, f"patterns.must_match[{number}]", unredactable(c.action),
                                            f"output lacks required pattern #{number}", segment=index))
            for number, regex in enumerate(self._must_not):
                for m in regex.finditer(segment.text):
                    if m.end() > m.start():
                        findings.append(Finding(c.name, f"patterns.must_not_match[{number}]", c.action,
                                                f"output matched forbidden pattern #{number}", segment=index,
                                                start=m.start(), end=m.end(), replacement=c.replacement))
        return findings

    def hold(self, segment: Segment, context: CheckContext) -> int:
        if not in_scope(segment, self.config.sources):
            return len(segment.text)
        return 0 if self._tail is None else self._tail.hold(segment.text)
