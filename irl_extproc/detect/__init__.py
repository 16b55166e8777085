"""Detector internals: pure functions from text to scored spans, no policy or I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Match:
    """A detected span of one kind in a text, with a confidence score in [0, 1]."""

    kind: str
    start: int
    end: int
    score: float
    rule: str  # which recognizer (and validator) produced it, e.g. "credit_card.luhn"


def resolve_overlaps(matches: list[Match]) -> list[Match]:
    """Keep the best match where spans overlap: higher score first, then the longer span."""
    kept: list[Match] = []
    for m in sorted(matches, key=lambda m: (-m.score, m.start - m.end)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    kept.sort(key=lambda m: m.start)
    return kept
