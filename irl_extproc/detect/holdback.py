"""How much of a stream's tail the built-in value detectors (PII, secrets) still need held back.

A detector's verdict on a text can still change with more input while
- the text's tail could grow into one of its candidate patterns (prefix languages, ``prefix.py``);
- a candidate's score depends on words that may still follow it (context-confirmed PII looks
  ``_CONTEXT_AFTER`` characters past a value);
- a complete candidate overlaps the held tail (overlap resolution may prefer it once the tail
  is known).
The hold point is where the earliest such text starts. Findings never start with whitespace,
so a held tail that does starts after it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import re2

from irl_extproc.detect import pii, secrets
from irl_extproc.detect.prefix import TailHold, python_requirements

_PII_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "email": (pii._EMAIL,),
    "phone": (pii._PHONE,),
    "credit_card": (pii._CARD,),
    "iban": (pii._IBAN,),
    "us_ssn": (pii._SSN,),
    "us_itin": (pii._SSN,),
    "ip_address": (pii._IPV4, pii._IPV6),
    "mac_address": (pii._MAC,),
    "us_passport": (pii._PASSPORT,),
    "us_driver_license": (pii._LICENSE,),
    "date_of_birth": (pii._DATE,),
    "street_address": (pii._STREET,),
}
# Scores that words after the value can raise (phones, SSNs) or that need such words at all.
_CONTEXT_SCORED = {"phone", "us_ssn", "us_itin", "us_passport", "us_driver_license", "date_of_birth"}
# The entropy scan's candidate runs (an RE2 pattern in secrets.py; one repeated ASCII class, so linear in re).
_SECRET_RUN = re.compile(secrets._CANDIDATE.pattern)


class DetectorHold:
    def __init__(self, patterns: Sequence[re.Pattern[str]], context_scored: Sequence[re.Pattern[str]] = ()) -> None:
        self._tail = TailHold(python_patterns=[*patterns, *context_scored])
        self._candidates = [*patterns, *context_scored]
        self._context_scored = len(patterns)  # candidates from this index on look past their end
        options = re2.Options()
        options.max_mem = 64 << 20
        self._gate = re2.Set.SearchSet(options)  # which candidates can occur at all: one pass
        self._needs: list[tuple[int, frozenset[int]]] = []  # candidate, the gate entries it needs
        for index, regex in enumerate(self._candidates):
            entries = frozenset(self._gate.Add(pattern) for pattern in python_requirements(regex))
            self._needs.append((index, entries))
        self._gate.Compile()

    def hold(self, text: str) -> int:
        end = len(text)
        held = self._tail.hold(text)
        while held < end and text[held].isspace():
            held += 1
        found = set(self._gate.Match(text) or ())
        spans = [
            (m.start(), m.end(), index >= self._context_scored)
            for index, needs in self._needs
            if needs <= found
            for m in self._candidates[index].finditer(text)
        ]
        moved = True
        while moved:  # a candidate pulled in may overlap another one further left
            moved = False
            for start, stop, scored in spans:
                if start < held and (stop > held or (scored and stop > end - pii._CONTEXT_AFTER)):
                    held, moved = start, True
        return held


@lru_cache(maxsize=32)
def pii_hold(types: tuple[str, ...]) -> DetectorHold:
    plain = {r for t in types if t not in _CONTEXT_SCORED for r in _PII_PATTERNS[t]}
    scored = {r for t in types if t in _CONTEXT_SCORED for r in _PII_PATTERNS[t]}
    return DetectorHold(sorted(plain, key=str), sorted(scored, key=str))


@lru_cache(maxsize=4)
def secrets_hold(entropy: bool) -> DetectorHold:
    generic = [secrets._JWT, secrets._URL_CREDENTIALS, secrets._ASSIGNMENT]
    return DetectorHold([p.regex for p in secrets.PROVIDERS] + generic + ([_SECRET_RUN] if entropy else []))
