"""The prefix-language transform behind stream hold points (irl_extproc/detect/prefix.py)."""

from __future__ import annotations

import re

import pytest
import re2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from irl_extproc.detect.holdback import pii_hold, secrets_hold
from irl_extproc.detect.pii import DEFAULT_TYPES
from irl_extproc.detect.prefix import TailHold, Unsupported, re2_prefix

pytestmark = pytest.mark.unit

ALPHABET = "ab1-A "
_ATOMS = st.sampled_from(["a", "b", "1", "-", "A", "[ab]", "[^a]", ".", r"\d", r"\w", r"\s", r"\W", "[a-b1]"])
_ASSERTIONS = st.sampled_from([r"\b", r"\B", "^", "$"])
_LOOKAROUNDS = st.sampled_from(["(?=a)", "(?!b)", "(?<=1)", "(?<![a-]) "])


def _patterns(lookarounds: bool = False) -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.lists(inner, min_size=2, max_size=3).map("".join),
            st.lists(inner, min_size=2, max_size=3).map(lambda alts: "(?:" + "|".join(alts) + ")"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}", "*?"])).map(
                lambda t: f"(?:{t[0]}){t[1]}"
            ),
            inner.map(lambda p: f"(?i:{p})"),
            inner.map(lambda p: f"({p})"),
        )

    leaves = st.one_of(_ATOMS, _ATOMS, _ASSERTIONS, *([_LOOKAROUNDS] if lookarounds else []))
    return st.recursive(leaves, extend, max_leaves=8)


def matches(pattern: str, text: str) -> list[tuple[int, int]]:
    """Every (start, end) where the pattern matches ``text[start:end]`` in some context."""
    regex = re.compile(pattern)
    return [(i, j) for i in range(len(text)) for j in range(i + 1, len(text) + 1) if regex.fullmatch(text, i, j)]


def around_a_match(data: st.DataObject, pattern: str) -> str:
    """Text around a real match (hypothesis writes one from the pattern), or any text."""
    left = data.draw(st.text(ALPHABET, max_size=3))
    value = data.draw(st.one_of(st.from_regex(pattern, fullmatch=True, alphabet=ALPHABET), st.text(ALPHABET)))
    return (left + value + data.draw(st.text(ALPHABET, max_size=2)))[:12]


def assert_holds_every_match_still_arriving(hold: TailHold, pattern: str, text: str) -> None:
    for start, end in matches(pattern, text):
        for cut in range(start + 1, end + 1):  # the stream has shown text[:cut] so far
            assert hold.hold(text[:cut]) <= start, (pattern, text, start, end, cut)


_PROPERTY = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@_PROPERTY
@given(_patterns(), st.data())
def test_property_the_hold_point_is_never_after_a_match_still_arriving(pattern: str, data: st.DataObject) -> None:
    try:
        re2.compile(pattern)
    except re2.error:
        assume(False)
    assert_holds_every_match_still_arriving(TailHold(re2_patterns=[pattern]), pattern, around_a_match(data, pattern))


@_PROPERTY
@given(_patterns(lookarounds=True), st.data())
def test_property_python_patterns_hold_every_match_still_arriving(pattern: str, data: st.DataObject) -> None:
    try:
        regex = re.compile(pattern)
    except re.error:
        assume(False)
    hold = TailHold(python_patterns=[regex])
    assert_holds_every_match_still_arriving(hold, pattern, around_a_match(data, pattern))


@pytest.mark.parametrize(
    ("pattern", "text", "hold"),
    [
        ("CANARY-[0-9a-f]{12}", "The pressure", 12),  # nothing could still become a canary
        ("CANARY-[0-9a-f]{12}", "The pressure CAN", 13),
        ("CANARY-[0-9a-f]{12}", "it is CANARY-0123", 6),
        ("CANARY-[0-9a-f]{12}", "it is CANARY-0123 ", 18),  # a space ended it: no longer a prefix
        ("CANARY-[0-9a-f]{12}", "it is CANARY-0123456789ab", 6),  # complete at the very end: still held
        (r"(?i)project\s+bluebird", "about Project  Blue", 6),
        (r"(?i)project\s+bluebird", "about projects", 14),
        (r"\bsecret\b", "a secre", 2),  # assertions are dropped: only ever more held
        ("a{3,5}b", "xaaaaa", 1),
        ("a{3,5}b", "xaaaaaa", 2),  # six a's: the match can only start at the second
        ("x|yz", "ay", 1),
    ],
)
def test_hold_points(pattern: str, text: str, hold: int) -> None:
    assert TailHold(re2_patterns=[pattern]).hold(text) == hold


@pytest.mark.parametrize(
    "pattern",
    [
        "[[:digit:]]+",  # POSIX class: Python would read a set of ':digt' and a ']'
        "a{,3}",  # RE2 reads a literal, Python a repeat
        r"(a)\1",  # octal or backreference
        r"\pL+",  # not parsed by Python
        r"\Qa.b\E",
    ],
)
def test_patterns_read_differently_by_the_dialects_are_refused(pattern: str) -> None:
    with pytest.raises(Unsupported):
        re2_prefix(pattern)


def test_python_classes_keep_their_unicode_meaning() -> None:
    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    hold = TailHold(python_patterns=[re.compile(r"x\s+y")])
    assert hold.hold("ax" + spaces) == 1
    assert TailHold(python_patterns=[re.compile(r"\d{4}")]).hold("n \u0663\u0663") == 2  # Arabic-Indic digits
    assert TailHold(python_patterns=[re.compile(r"(?a:\d{4})")]).hold("n \u0663\u0663") == 4
    assert TailHold(python_patterns=[re.compile(r"[^\s,]{3}")]).hold("a, b") == 3


def test_large_counts_widen_to_unbounded() -> None:
    hold = TailHold(re2_patterns=["k[a-z]{2,500}!"])
    assert hold.hold("k" + "a" * 700) == 0


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("The pressure held ", ""),  # nothing in it could still become a value
        ("The pressure held", "held"),  # a word still arriving could become an address or a key
        ("mail jane.do", "jane.do"),
        ("call me at +1 415 55", "+1 415 55"),
        ("card 4111 1111 11", "4111 1111 11"),
        ("my ssn is 123-45-6789 and", "123-45-6789 and"),  # words after it may still raise its score
        ("it is -----BEGIN RSA PRIV", "-----BEGIN RSA PRIV"),
        ("key ghp_aB3dE5fG7", "ghp_aB3dE5fG7"),
    ],
)
def test_detector_hold_points(text: str, held: str) -> None:
    hold = min(pii_hold(DEFAULT_TYPES).hold(text), secrets_hold(entropy=True).hold(text))
    assert text[hold:] == held
