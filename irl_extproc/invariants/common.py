"""Pieces several invariants share: the `sources` scope and the per-invariant score record."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from pydantic import Field, model_validator

from irl_extproc.conversation import Conversation, Segment, Source
from irl_extproc.invariants.base import Action, CheckContext, Finding, InvariantConfig, Layer
from irl_extproc.masking import DEFAULT_KEY_ENV, Masker, Strategy, hash_key_from_env

SCORES_KEY = "scores"  # context.state[SCORES_KEY][invariant name] = highest score seen


class ScopedConfig(InvariantConfig):
    """An invariant that scans text segments, optionally only some parts of the traffic."""

    sources: list[Source] | None = Field(
        None, min_length=1, description="only scan these parts, e.g. [user, tool_result] (default: all)"
    )


def scoped_texts(conversation: Conversation, sources: list[Source] | None) -> list[tuple[int, Segment]]:
    return conversation.texts(*(sources or ()))


def in_scope(segment: Segment, sources: list[Source] | None) -> bool:
    return not sources or segment.source in sources


def record_score(context: CheckContext, invariant: str, score: float) -> None:
    """Remember an invariant's highest score in this stream, findings or not (for `irl check`)."""
    scores: dict[str, float] = context.state.setdefault(SCORES_KEY, {})
    scores[invariant] = max(score, scores.get(invariant, 0.0))


class MaskedConfig(ScopedConfig):
    """A detector whose `redact` action masks values (PII, secrets)."""

    redaction: Strategy = Field(
        "placeholder", description="placeholder ([EMAIL_1]), partial (****1234), hash (keyed HMAC) or remove"
    )
    restore: bool = Field(
        False, description="reversible masking: put the originals back into this stream's response "
        "(placeholder redaction only; the mapping lives in the stream's memory and is never logged)",
    )
    hash_key_env: str = Field(DEFAULT_KEY_ENV, description="environment variable holding the key for hash")

    @model_validator(mode="after")
    def _restore_needs_placeholders(self) -> MaskedConfig:
        if self.restore and self.redaction != "placeholder":
            raise ValueError(
                f"restore: true needs redaction: placeholder (got {self.redaction!r}); "
                "partial, hashed or removed values cannot be put back"
            )
        return self


def masker_for(config: MaskedConfig) -> Masker:
    key = hash_key_from_env(config.hash_key_env) if config.redaction == "hash" else None
    return Masker(config.redaction, reversible=config.restore, hash_key=key)


def unredactable(action: Action) -> Action:
    """For findings with nothing to cut out (a missing pattern, bad SQL): redact means block."""
    return "monitor" if action == "monitor" else "block"


class DetectedValue(Protocol):
    """What a value detector (PII, secrets) reports: a kind, the rule, a score and a span."""

    @property
    def kind(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def masked_findings(
    config: MaskedConfig,
    masker: Masker,
    conversation: Conversation,
    context: CheckContext,
    *,
    detect: Callable[[str], Iterable[DetectedValue]],
    layer: Callable[[str], Layer],
    threshold: float,
) -> list[Finding]:
    """One finding per detected value in the scoped segments, each with its masked replacement."""
    findings = []
    for index, segment in scoped_texts(conversation, config.sources):
        for m in detect(segment.text):
            record_score(context, config.name, m.score)
            findings.append(Finding(
                invariant=config.name,
                rule=f"{config.name}.{m.kind}",
                action=config.action,
                message=f"{m.kind} found ({m.rule})",
                layer=layer(m.kind),
                score=round(m.score, 3),
                threshold=threshold,
                segment=index,
                start=m.start,
                end=m.end,
                replacement=masker.mask(m.kind, segment.text[m.start:m.end], context),
            ))
    return findings
