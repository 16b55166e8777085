"""Reversible masking in streams: placeholders the model echoes back, found as spans.

``masking.restore`` is the one function that knows the stream's placeholder mapping; the
window calls it per placeholder-shaped match, so a placeholder split across events is
restored once both halves are in the window.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from irl_extproc.invariants.base import CheckContext
from irl_extproc.masking import restore

# Fixed, linear patterns for masking's placeholder shape, ``[EMAIL_1]``.
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_\d+\]")
_OPEN_PLACEHOLDER = re.compile(r"\[[A-Z0-9_]*\Z")
MAX_PLACEHOLDER_CHARS = 48  # longer '[…' runs are not placeholders worth waiting for

Restorer = Callable[[str], str]


def restorer(context: CheckContext) -> Restorer:
    return lambda text: restore(text, context)


def placeholder_spans(text: str, restore_one: Restorer) -> list[tuple[int, int, str]]:
    """(start, end, original) for each placeholder in ``text`` the stream can restore."""
    spans = []
    for match in _PLACEHOLDER.finditer(text):
        original = restore_one(match.group())
        if original != match.group():
            spans.append((match.start(), match.end(), original))
    return spans


def open_placeholder(text: str) -> int | None:
    """Where a placeholder that ``text`` ends in the middle of starts (None: it does not)."""
    tail_start = max(0, len(text) - MAX_PLACEHOLDER_CHARS)
    match = _OPEN_PLACEHOLDER.search(text, tail_start)
    return match.start() if match else None
