"""Hold points: where a text's tail could still grow into a match of a pattern.

A stream may release text only once no continuation can make it part of a finding. A
match that more input could still complete ends in a *prefix* of the pattern's language,
and the prefix language P(R) of a regular expression is regular too:

    P(c) = ε | c              P(AB) = P(A) | A·P(B)          P(A|B) = P(A) | P(B)
    P(A{m,n}) = A{0,n-1}·P(A) P(A*) = A*·P(A)                assertions (\\b, ^, lookaround) = ε

Searching ``(?:P(R))\\z`` with RE2 finds the leftmost start of a suffix that could still
become (or already is) a match: the pattern's *hold point*. Dropping assertions and
widening large counts only makes P bigger, so a hold point is never later than the true
one: it can hold a little more than needed, never less. A pattern that cannot be
transformed raises ``Unsupported``; its invariant then holds its whole window.

Operator patterns are RE2 syntax, read with Python's parser (``re._parser``) after the
constructs the two dialects read differently are refused; atoms are written back as RE2
atoms. Project patterns run on Python ``re``, so their classes are written out with
Python's Unicode meaning.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Iterable
from typing import Any

import re2

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

MAX_COUNT = 100  # counted repeats above this become unbounded (a superset: it only ever holds more)
_EMPTY = "(?:)"
# Where RE2 and Python read the same text differently: POSIX classes, {,n}, \1 (octal or backreference).
_DIALECT_TRAPS = re.compile(r"\[:|\{,|\\\d")
# Python's \s on str: exactly the characters for which str.isspace() holds (tested).
_PY_SPACE = r"\x{9}-\x{d}\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_FLAG_LETTERS = {re.IGNORECASE: "i", re.DOTALL: "s", re.MULTILINE: "m"}
_IGNORED_FLAGS = re.UNICODE | re.VERBOSE | re.DEBUG  # no effect on the language once parsed
_ANCHOR_START = re2._Anchor.ANCHOR_START


class Unsupported(ValueError):
    """A pattern whose prefix language is not built (the caller holds conservatively instead)."""


def _char(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else f"\\x{{{code:x}}}"


class _Writer:
    """Writes L (a pattern's language without assertions) and P (its prefixes) in RE2 syntax."""

    def __init__(self, python: bool, groups: dict[int, Any], reverse: bool = False) -> None:
        self.python = python
        self.groups = groups
        self.reverse = reverse  # write the reversed language (read right to left)
        self.ascii = False

    def _then(self, first: str, second: str) -> str:
        return second + first if self.reverse else first + second

    # -- classes -------------------------------------------------------------------------

    def _category(self, category: Any) -> tuple[str, bool]:
        """(class body, negated) for \\d \\w \\s and their complements."""
        name = str(category)
        negated, base = "NOT_" in name, name.rsplit("_", 1)[-1]
        if base not in ("DIGIT", "WORD", "SPACE"):
            raise Unsupported(f"category {name}")
        if not self.python:
            letter = {"DIGIT": "d", "WORD": "w", "SPACE": "s"}[base]
            return "\\" + (letter.upper() if negated else letter), False
        if self.ascii:
            body = {"DIGIT": "0-9", "WORD": "0-9A-Za-z_", "SPACE": r"\x{9}-\x{d}\x{20}"}[base]
        else:
            body = {"DIGIT": r"\p{Nd}", "WORD": r"\p{L}\p{N}_", "SPACE": _PY_SPACE}[base]
        return body, negated

    def _set(self, items: list[tuple[Any, Any]]) -> str:
        negate = bool(items) and items[0][0] is _c.NEGATE
        parts: list[str] = []
        complements: list[str] = []
        for op, av in items[1:] if negate else items:
            if op is _c.LITERAL:
                parts.append(_char(av))
            elif op is _c.RANGE:
                parts.append(f"{_char(av[0])}-{_char(av[1])}")
            elif op is _c.CATEGORY:
                body, negated = self._category(av)
                if not negated:
                    parts.append(body)
                elif negate:
                    raise Unsupported("a negated category inside a negated class")
                else:
                    complements.append(f"[^{body}]")
            else:
                raise Unsupported(f"class item {op}")
        if negate:
            return f"[^{''.join(parts)}]"
        alternatives = ([f"[{''.join(parts)}]"] if parts else []) + complements
        if not alternatives:
            raise Unsupported("an empty class")
        return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"

    def _atom(self, op: Any, av: Any) -> str | None:
        """One character's class, or None when the node is not a single character."""
        if op is _c.LITERAL:
            return _char(av)
        if op is _c.NOT_LITERAL:
            return f"[^{_char(av)}]"
        if op is _c.ANY:
            return "."
        if op is _c.IN:
            return self._set(av)
        return None

    # -- flags ---------------------------------------------------------------------------

    def _scoped(self, add: int, remove: int, body: Any, prefix: bool) -> str:
        unknown = (add | remove) & ~(sum(_FLAG_LETTERS) | _IGNORED_FLAGS | re.ASCII)
        if unknown:
            raise Unsupported(f"flags {unknown}")
        on = "".join(letter for flag, letter in _FLAG_LETTERS.items() if add & flag)
        off = "".join(letter for flag, letter in _FLAG_LETTERS.items() if remove & flag)
        was_ascii = self.ascii
        if add & re.ASCII or remove & re.ASCII:
            if not self.python:
                raise Unsupported("the ASCII flag")
            self.ascii = bool(add & re.ASCII)
        inner = self.prefix(body) if prefix else self.language(body)
        self.ascii = was_ascii
        flags = on + ("-" + off if off else "")
        return f"(?{flags}:{inner})" if flags else f"(?:{inner})"

    # -- L and P -------------------------------------------------------------------------

    def language(self, items: Any) -> str:
        parts = [self._language(op, av) for op, av in items]
        return "".join(reversed(parts) if self.reverse else parts)

    def _language(self, op: Any, av: Any) -> str:
        atom = self._atom(op, av)
        if atom is not None:
            return atom
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            return ""
        if op is _c.BRANCH:
            return "(?:" + "|".join(self.language(alt) or _EMPTY for alt in av[1]) + ")"
        if op is _c.SUBPATTERN:
            return self._scoped(av[1], av[2], av[3], prefix=False)
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            low, high, body = av
            return f"(?:{self.language(body) or _EMPTY}){_count(low, high)}"
        if op is _c.GROUPREF:
            return f"(?:{self.language(self._group(av)) or _EMPTY})"
        if op is _c.GROUPREF_EXISTS:
            return f"(?:{self.language(av[1]) or _EMPTY}|{self.language(av[2] or [])})"
        if op is _c.ATOMIC_GROUP:
            return f"(?:{self.language(av) or _EMPTY})"
        raise Unsupported(f"construct {op}")

    def prefix(self, items: Any) -> str:
        """P of a sequence, folded from the right: P(A·R) = P(A) | A·P(R)."""
        rest: str | None = None  # None: P of the empty sequence, ε
        for op, av in reversed(list(items)):
            if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
                continue  # ε: P(ε·R) = P(R)
            head = self._prefix(op, av)
            rest = head if rest is None else f"(?:{head or _EMPTY}|{self._then(self._language(op, av), rest)})"
        return rest or ""

    def _prefix(self, op: Any, av: Any) -> str:
        atom = self._atom(op, av)
        if atom is not None:
            return f"(?:{atom})?"
        if op is _c.BRANCH:
            return "(?:" + "|".join(self.prefix(alt) or _EMPTY for alt in av[1]) + ")"
        if op is _c.SUBPATTERN:
            return self._scoped(av[1], av[2], av[3], prefix=True)
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            _, high, body = av
            if high == 0:
                return ""
            inner = self.prefix(body)
            if high == 1:
                return inner
            return self._then(f"(?:{self.language(body) or _EMPTY}){_count(0, high - 1)}", inner)
        if op is _c.GROUPREF:
            return self.prefix(self._group(av))
        if op is _c.GROUPREF_EXISTS:
            return f"(?:{self.prefix(av[1]) or _EMPTY}|{self.prefix(av[2] or []) or _EMPTY})"
        if op is _c.ATOMIC_GROUP:
            return self.prefix(av)
        raise Unsupported(f"construct {op}")

    def _group(self, number: int) -> Any:
        if number not in self.groups:
            raise Unsupported("a reference to a group not yet seen")
        return self.groups[number]


def _count(low: int, high: int) -> str:
    low = min(low, MAX_COUNT)
    if high > MAX_COUNT:  # MAXREPEAT (unbounded) included
        return "*" if low == 0 else f"{{{low},}}"
    return f"{{{low},{high}}}"


def _groups(items: Any, found: dict[int, Any]) -> dict[int, Any]:
    for op, av in items:
        if op is _c.SUBPATTERN:
            if av[0] is not None:
                found[av[0]] = av[3]
            _groups(av[3], found)
        elif op is _c.BRANCH:
            for alt in av[1]:
                _groups(alt, found)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            _groups(av[2], found)
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            _groups(av[1], found)
        elif op is _c.ATOMIC_GROUP:
            _groups(av, found)
        elif op is _c.GROUPREF_EXISTS:
            _groups(av[1], found)
            _groups(av[2] or [], found)
    return found


def _parse(pattern: str, flags: int) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on sets like [[] that both dialects read alike
            return _parser.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError) as exc:
        raise Unsupported(f"not parsed: {exc}") from None


def _written(pattern: str, flags: int, python: bool, *, prefix: bool, reverse: bool = False) -> str:
    """L (``prefix=False``) or P of a pattern, in RE2 syntax (``reverse``: read right to left)."""
    parsed = _parse(pattern, flags)
    return _write(parsed, _Writer(python, _groups(parsed, {}), reverse), int(parsed.state.flags), prefix=prefix)


def _language_of(items: Any, flags: int) -> str:
    return _write(items, _Writer(True, _groups(items, {})), flags, prefix=False)


def _write(items: Any, writer: _Writer, flags: int, *, prefix: bool) -> str:
    if flags & re.LOCALE:
        raise Unsupported("the LOCALE flag")
    if flags & re.ASCII:
        if not writer.python:
            raise Unsupported("the ASCII flag")
        writer.ascii = True
    try:
        body = (writer.prefix(items) if prefix else writer.language(items)) or _EMPTY
    except RecursionError:
        raise Unsupported("nested too deeply") from None
    letters = "".join(letter for flag, letter in _FLAG_LETTERS.items() if flags & flag)
    return f"(?{letters}:{body})" if letters else body


def python_requirements(regex: re.Pattern[str]) -> list[str]:
    """RE2 patterns that a text must each contain for the Python pattern to match in it: its
    language without assertions, and the body of each lookahead or lookbehind it must pass."""
    parsed = _parse(regex.pattern, regex.flags)
    needed = [item[1][1] for item in parsed if item[0] is _c.ASSERT]
    return [_written(regex.pattern, regex.flags, python=True, prefix=False)] + [
        _language_of(sub, regex.flags) for sub in needed
    ]


def re2_prefix(pattern: str, *, reverse: bool = False) -> str:
    """P of an operator's RE2 pattern, in RE2 syntax."""
    if _DIALECT_TRAPS.search(pattern):
        raise Unsupported("a construct RE2 and Python read differently")
    return _written(pattern, 0, python=False, prefix=True, reverse=reverse)


def python_prefix(regex: re.Pattern[str], *, reverse: bool = False) -> str:
    """P of a project pattern compiled with Python ``re``, in RE2 syntax with Python's classes."""
    return _written(regex.pattern, regex.flags, python=True, prefix=True, reverse=reverse)


class TailHold:
    """Where the longest suffix of a text that could still grow into a match (of any of the
    patterns) starts. Raises ``Unsupported`` when a pattern cannot be transformed.

    The reversed prefix language is matched anchored at the end of the text, longest match:
    RE2's DFA reads the text backwards only while the suffix is still a possible prefix, so
    a check costs about a microsecond, however many patterns there are.
    """

    def __init__(self, *, re2_patterns: Iterable[str] = (), python_patterns: Iterable[re.Pattern[str]] = ()) -> None:
        reversed_prefixes = [re2_prefix(p, reverse=True) for p in re2_patterns]
        reversed_prefixes += [python_prefix(r, reverse=True) for r in python_patterns]
        options = re2.Options()
        options.max_mem = 64 << 20
        options.log_errors = False
        options.longest_match = True
        try:
            regex = re2.compile("|".join(reversed_prefixes) or _EMPTY, options)
        except re2.error as exc:
            raise Unsupported(f"RE2 refused the prefix pattern: {exc}") from None
        self._match = regex._regexp.Match  # the wrapper's own per-call work costs 4x the match

    def hold(self, text: str) -> int:
        """The hold point in ``text`` (``len(text)``: nothing needs holding)."""
        backwards = text[::-1].encode()
        end = self._match(_ANCHOR_START, backwards, 0, len(backwards))[0][1]
        if end <= 0:
            return len(text)
        return len(text) - (end if len(backwards) == len(text) else len(backwards[:end].decode()))


def re2_tail(patterns: Iterable[str]) -> TailHold | None:
    """The hold of a list of operator patterns; None when one cannot be transformed."""
    try:
        return TailHold(re2_patterns=patterns)
    except Unsupported:
        return None
