"""Findings + mode → one decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from irl_extproc.invariants.base import Finding

Verdict = Literal["allow", "redact", "block"]


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict  # what the findings call for, whether or not it is enforced
    enforced: bool  # False in monitor mode: the message passes unchanged
    findings: tuple[Finding, ...] = ()

    @property
    def blocking(self) -> Finding | None:
        return next((f for f in self.findings if f.action == "block"), None)

    @property
    def redactions(self) -> list[Finding]:
        """Text-span rewrites (field edits such as a max_tokens cap carry ``edit`` instead)."""
        return [f for f in self.findings if f.action == "redact" and f.replacement is not None]

    @property
    def acts(self) -> bool:
        """True when the message must be changed or stopped."""
        return self.enforced and self.verdict != "allow"


ALLOW = Decision("allow", True)


def decide(findings: Sequence[Finding], mode: Literal["enforce", "monitor"]) -> Decision:
    actions = {f.action for f in findings}
    verdict: Verdict = "block" if "block" in actions else "redact" if "redact" in actions else "allow"
    return Decision(verdict, mode == "enforce", tuple(findings))
