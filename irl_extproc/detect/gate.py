"""One linear-time RE2 pass that tells which of many ``re`` patterns can match a text.

Python's ``re`` tries every pattern at every position; RE2's ``Set`` scans once for all of
them. Patterns run on ``re`` afterwards only when their gate fired, so a clean text costs
one pass. Lookarounds (unsupported by RE2) are dropped from the gate, which makes it match
a superset: the ``re`` pattern still decides.
"""

from __future__ import annotations

import re2


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


class Gate:
    def __init__(self, patterns: list[str], flags_ignorecase: bool = False) -> None:
        options = re2.Options()
        options.max_mem = 64 << 20
        options.case_sensitive = not flags_ignorecase
        self._set = re2.Set.SearchSet(options)
        self._each = []
        for pattern in patterns:
            loose = without_lookarounds(pattern)
            self._set.Add(loose)
            self._each.append(re2.compile(loose, options))
        self._set.Compile()

    def candidates(self, text: str) -> list[int]:
        """Indexes of the patterns that may match ``text``."""
        return self._set.Match(text) or []

    def first(self, index: int, text: str) -> int | None:
        """Where pattern ``index`` can first match (its ``re`` search may start there), or None."""
        m = self._each[index].search(text)
        return None if m is None else m.start()
