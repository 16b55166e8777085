"""Prompt injection and jailbreaks, direct (user) and indirect (tool results, documents)."""

from __future__ import annotations

from typing import ClassVar, cast

from pydantic import Field

from irl_extproc.conversation import Conversation, Source
from irl_extproc.detect.injection import Evidence, scan
from irl_extproc.invariants.base import CheckContext, Finding, Layer
from irl_extproc.invariants.common import ScopedConfig, record_score, scoped_texts

# Text that arrives from outside the conversation: injections there are indirect.
INDIRECT: frozenset[Source] = frozenset({"tool_result", "document", "tool_definition"})


class PromptInjectionConfig(ScopedConfig):
    name: ClassVar[str] = "prompt_injection"
    sources: list[Source] | None = Field(  # type: ignore[assignment]
        ["user", "tool_result", "document", "tool_definition"],
        min_length=1,
        description="parts to scan; system prompts are the operator's own text and are not scanned by default",
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="flag user messages scoring at least this")
    # Indirect text is more varied than prompts, so its defaults ask for stronger evidence.
    tool_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="flag tool results and tool definitions scoring at least this")
    document_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="flag retrieved documents (document parts) scoring at least this")

    def threshold_for(self, source: Source) -> float:
        if source == "document":
            return self.document_threshold
        return self.tool_threshold if source in INDIRECT else self.threshold
    classifier: bool = Field(True, description="use the shipped classifier as well as the heuristics")


def _strongest(evidence: tuple[Evidence, ...]) -> Evidence | None:
    return max(evidence, key=lambda e: e.score, default=None)


class PromptInjection:
    def __init__(self, config: PromptInjectionConfig) -> None:
        self.config = config

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c, findings = self.config, []
        for index, segment in scoped_texts(conversation, c.sources):
            verdict = scan(segment.text, use_classifier=c.classifier)
            record_score(context, c.name, verdict.score)
            threshold = c.threshold_for(segment.source)
            if verdict.score < threshold:
                continue
            top = _strongest(verdict.evidence)
            layer, rule = (top.layer, top.rule) if top else ("heuristic", "combined")
            start, end = (top.start, top.end) if top else (0, len(segment.text))
            kind = "indirect" if segment.source in INDIRECT else "direct"
            findings.append(Finding(
                invariant=c.name,
                rule=f"prompt_injection.{rule}",
                action=c.action,
                message=f"{kind} prompt injection in {segment.source} (score {verdict.score:.2f} >= {threshold})",
                layer=cast(Layer, layer),
                score=verdict.score,
                threshold=threshold,
                segment=index,
                start=start,
                end=end,
                replacement="[REMOVED: suspected prompt injection]",
            ))
        return findings
