"""Operator-written patterns that must not appear, compiled once on RE2 (linear time)."""

from __future__ import annotations

from typing import ClassVar

import re2
from pydantic import Field, field_validator

from irl_extproc.conversation import Conversation, Segment, Source
from irl_extproc.detect.prefix import re2_tail
from irl_extproc.invariants.base import CheckContext, Finding, InvariantConfig


def compile_re2(pattern: str) -> re2._Regexp:
    """Compile on RE2, turning its error into one that names the pattern and the fix."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(
            f"pattern {pattern!r} is not valid RE2 syntax ({exc}); RE2 has no backreferences or "
            "lookaround, see https://github.com/google/re2/wiki/Syntax"
        ) from None


class DenyPatternsConfig(InvariantConfig):
    name: ClassVar[str] = "deny_patterns"
    patterns: list[str] = Field(min_length=1, description="RE2 patterns; (?i) for case-insensitive")
    sources: list[Source] | None = Field(None, description="only scan these parts (default: all)")
    replacement: str = "[REDACTED]"

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_re2(pattern)
        return patterns


class DenyPatterns:
    def __init__(self, config: DenyPatternsConfig) -> None:
        self.config = config
        self._compiled = [compile_re2(p) for p in config.patterns]
        self._sources: tuple[Source, ...] = tuple(config.sources or ())
        self._tail = re2_tail(config.patterns)  # None: a pattern without a prefix form; streams hold their window

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        findings = []
        for index, segment in conversation.texts(*self._sources):
            for number, regex in enumerate(self._compiled):
                for match in regex.finditer(segment.text):
                    if match.end() == match.start():
                        continue
                    findings.append(
                        Finding(
                            invariant="deny_patterns",
                            rule=f"deny_patterns[{number}]",
                            action=self.config.action,
                            message=f"matched deny pattern #{number}",
                            segment=index,
                            start=match.start(),
                            end=match.end(),
                            replacement=self.config.replacement,
                        )
                    )
        return findings

    def hold(self, segment: Segment, context: CheckContext) -> int:
        if self._sources and segment.source not in self._sources:
            return len(segment.text)
        return 0 if self._tail is None else self._tail.hold(segment.text)
