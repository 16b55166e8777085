"""Where an expensive ``re`` scan can match: windows around the runs a cheap RE2 scan finds.

Python's ``re`` tries a pattern at every position (~100 ns a character for a pattern that
opens with lookbehinds and alternatives), while RE2 finds the runs of characters a match is
made of in one linear pass over the UTF-8 bytes. If every match of the expensive pattern
lies within ``before`` characters ahead of such a run and ``after`` characters past it, then
scanning only those windows finds exactly the same matches: lookbehinds still see the text
before a window, and the window ends after the furthest character a lookahead can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import re2


def char_offset(raw: bytes, text: str, offset: int) -> int:
    """The character offset in ``text`` of byte ``offset`` of its UTF-8 encoding ``raw``."""
    return offset if len(raw) == len(text) else len(raw[:offset].decode())


def windows(text: str, runs: re2._Regexp, before: int, after: int) -> list[tuple[int, int]]:
    """Disjoint (start, end) character windows: each run widened, overlapping ones merged."""
    raw = text.encode()
    merged: list[tuple[int, int]] = []
    for run in runs.finditer(raw):
        start = max(char_offset(raw, text, run.start()) - before, 0)
        end = min(char_offset(raw, text, run.end()) + after, len(text))
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def finditer_near(pattern: re.Pattern[str], text: str, runs: re2._Regexp, before: int,
                  after: int) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``, scanning only the windows around ``runs``."""
    for start, end in windows(text, runs, before, after):
        yield from pattern.finditer(text, start, end)
