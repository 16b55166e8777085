"""One linear-time RE2 pass that tells which of many ``re`` patterns can match a text.

Python's ``re`` tries every pattern at every position; RE2's ``Set`` scans once for all of
them. Patterns run on ``re`` afterwards only when their gate fired, so a clean text costs
one pass. Lookarounds (unsupported by RE2) are dropped from the gate, which makes it match
a superset: the ``re`` pattern still decides.

The set is cut short where a pattern opens a wildcard gap (``.{0,80}``): every position inside
such a gap keeps a thread alive, and together they multiply the DFA's states, which RE2 has to
build for each new text. The part before the gap is still a necessary condition.
"""

from __future__ import annotations

import re2

from irl_extproc.detect.regions import char_offset


def without_lookarounds(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith(("(?!", "(?=", "(?<!", "(?<="), i):
            depth, j = 0, i
            while j < len(pattern):
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
                if depth == 0:
                    break
            i = j
            continue
        out.append(pattern[i])
        i += 1
    return "".join(out)


def before_gap(pattern: str) -> str:
    """The pattern up to its first top-level wildcard gap ``.{0,n}``.

    Unchanged when it has no such gap, or a top-level ``|`` (the cut would drop alternatives).
    """
    depth, cut, i, in_class = 0, -1, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1 if pattern.startswith("[]", i) or pattern.startswith("[^]", i) else 0
        elif ch in "()":
            depth += 1 if ch == "(" else -1
        elif depth == 0 and ch == "|":
            return pattern
        elif depth == 0 and cut < 0 and pattern.startswith(".{0,", i):
            cut = i
        i += 1
    return pattern[:cut] if cut > 0 else pattern


class Gate:
    def __init__(self, patterns: list[str], flags_ignorecase: bool = False) -> None:
        options = re2.Options()
        options.max_mem = 64 << 20
        options.case_sensitive = not flags_ignorecase
        self._set = re2.Set.SearchSet(options)
        self._each = []
        for pattern in patterns:
            loose = without_lookarounds(pattern)
            self._set.Add(before_gap(loose))
            self._each.append(re2.compile(loose, options))
        self._set.Compile()

    def candidates(self, text: str | bytes) -> list[int]:
        """Indexes of the patterns that may match ``text``."""
        return self._set.Match(text) or []

    def starts(self, text: str) -> list[tuple[int, int]]:
        """(pattern index, where its ``re`` search may start) for the patterns that may match.

        RE2 runs on the UTF-8 bytes, encoded once: on ``str`` it would encode the text and map
        byte offsets back to characters on every call, which costs more than the search.
        """
        raw = text.encode()
        found = []
        for index in sorted(self.candidates(raw)):  # in pattern order, whatever order the set found them
            m = self._each[index].search(raw)
            if m is not None:
                found.append((index, char_offset(raw, text, m.start())))
        return found
