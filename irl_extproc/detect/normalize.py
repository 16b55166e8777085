"""Undo the tricks that hide text from detectors, keeping a map back to the original offsets.

- Unicode tag characters (U+E0000 block) smuggle invisible ASCII: decoded to that ASCII.
- Invisible and format characters (zero-width, bidi controls, soft hyphen) are dropped, so
  ``ig\u200bnore`` reads ``ignore``.
- NFKC folds full-width and compatibility forms (full-width or mathematical-bold letters).
- Confusable homoglyphs (Cyrillic/Greek letters that look Latin) are mapped to Latin inside
  words that also contain Latin letters; genuinely Cyrillic or Greek words are left alone.

Encoded segments (base64, hex, rot13, leetspeak) are decoded by ``decoded_views`` so the same
detectors can scan them too.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

import re2

from irl_extproc.detect.regions import char_offset

_INVISIBLE = frozenset([
    0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0,
    *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), *range(0xFE00, 0xFE10),
])
# Cyrillic, Greek and Latin-extension letters that render like ASCII letters (escaped: they look alike).
_CONFUSABLES = str.maketrans(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445\u0455\u0456\u0458\u0501"
    "\u051b\u051d\u044c\u04bb\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425"
    "\u0405\u0406\u0408\u03b1\u03bf\u03bd\u03b9\u03ba\u03c1\u03c4\u03c5\u03c7\u03b5\u0391\u0392\u0395"
    "\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u0261\u0131\u0237\u2113\u0251"
    "\ua7b5",
    "abekmhopctyxsijdqwbhABEKMHOPCTYXSIJaovikptuxeABEZHIKMNOPTYXgijlab",
)
_TAGS = range(0xE0000, 0xE0080)
_WORD_WITH_NON_ASCII = re.compile(r"\w*[^\x00-\x7f]\w*")
_LATIN = re.compile(r"[A-Za-z]")


def _re2_class(codes: Iterable[int]) -> str:
    """An RE2 character class of these code points, as ranges."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"


# RE2 scans the UTF-8 bytes for these (Python's ``re`` costs ~10 ns a character even for a class).
_CONFUSABLE = re2.compile(_re2_class(_CONFUSABLES))


@cache
def _foldable() -> re2._Regexp:
    """Runs of the characters ``_fold`` may change: invisible ones, tags, what NFKC rewrites.

    One scan for them is far cheaper than folding every non-ASCII character. The Basic
    Multilingual Plane's are listed exactly (built once, about 20 ms); characters beyond it are
    rare, so all of them are folded one by one.
    """
    nfkc = (c for c in range(0x80, 0x10000) if unicodedata.normalize("NFKC", chr(c)) != chr(c))
    members = _re2_class({*nfkc, *_INVISIBLE})
    return re2.compile(f"(?:{members}|[\\x{{10000}}-\\x{{10ffff}}])+")


@dataclass(slots=True)
class Normalized:
    """Normalised text, where its characters came from, and what tricks were seen."""

    text: str
    # (normalised start, original start, step): step 1 maps a copied run one to one; step 0
    # maps every character produced from one original character back to it. None: identity.
    pieces: list[tuple[int, int, int]] | None = None
    signals: set[str] = field(default_factory=set)  # "tag_smuggling", "invisible_chars", "homoglyphs"

    def _origin(self, index: int) -> int:
        assert self.pieces is not None
        k = bisect_right(self.pieces, (index, _BIG, _BIG)) - 1
        start, original, step = self.pieces[max(k, 0)]
        return original + (index - start) * step

    def span(self, start: int, end: int, original_length: int) -> tuple[int, int]:
        """The original text's span for ``text[start:end]``."""
        if self.pieces is None:
            return start, end
        if not self.pieces or not self.text:
            return 0, original_length
        first = self._origin(min(start, len(self.text) - 1))
        last = self._origin(min(end, len(self.text)) - 1) + 1 if end > 0 else first
        return first, max(last, first)


_BIG = 1 << 62


def normalize(text: str) -> Normalized:
    if text.isascii():
        return Normalized(text)
    signals: set[str] = set()
    folded, pieces = _fold_runs(text, signals)
    if not _CONFUSABLE.search(folded.encode()):  # the word-by-word pass only when look-alikes occur
        return Normalized(folded, pieces, signals)
    mapped = _WORD_WITH_NON_ASCII.sub(_unconfuse, folded)  # one letter for one: offsets hold
    if mapped != folded:
        signals.add("homoglyphs")
    return Normalized(mapped, pieces, signals)


def _fold_runs(text: str, signals: set[str]) -> tuple[str, list[tuple[int, int, int]] | None]:
    """The text with its foldable runs folded, and the map back (None: nothing changed)."""
    raw = text.encode()
    out: list[str] = []
    pieces: list[tuple[int, int, int]] = []
    position = length = 0  # characters, in the original / in the output so far
    seen_bytes = 0  # ``raw[:seen_bytes]`` is ``text[:position]``
    for run in _foldable().finditer(raw):  # everything else is kept as it is
        start = position + len(raw[seen_bytes:run.start()].decode())
        chars = run.group().decode()
        if start > position:
            pieces.append((length, position, 1))
            out.append(text[position:start])
            length += start - position
        for offset, ch in enumerate(chars, start):
            folded = _fold(ch, signals)
            if folded:
                pieces.append((length, offset, 0))
                out.append(folded)
                length += len(folded)
        position, seen_bytes = start + len(chars), run.end()
    if not out and position == 0:
        return text, None
    if position < len(text):
        pieces.append((length, position, 1))
        out.append(text[position:])
    return "".join(out), pieces


def _fold(ch: str, signals: set[str]) -> str:
    """One non-ASCII character as the detectors read it; notes the trick if it was one."""
    code = ord(ch)
    if code in _TAGS:
        signals.add("tag_smuggling")
        return chr(code - 0xE0000) if 0xE0020 <= code <= 0xE007E else ""
    if code in _INVISIBLE:
        signals.add("invisible_chars")
        return ""
    return unicodedata.normalize("NFKC", ch)


def _unconfuse(word: re.Match[str]) -> str:
    """Map look-alike letters to Latin only in words that mix them with Latin letters."""
    w = word.group()
    if not _LATIN.search(w):
        return w
    return w.translate(_CONFUSABLES)


# --- encoded segments ------------------------------------------------------------------------

# RE2 (linear, fast on long text); scanning left to right, runs are found whole.
_BASE64 = re2.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re2.compile(rb"(?:[0-9A-Fa-f]{2}[ :]?){12,}")
_LEET_WORD = re.compile(r"\b(?=\w*[a-z])(?=\w*[013457@$])[a-z0-9@$]{3,}\b", re.IGNORECASE)
_LEET = str.maketrans("013457@$", "oieastas")
_MAX_DECODED = 8192
_MAX_WHOLE_VIEW = 8192
# Cheap RE2 gates on the UTF-8 bytes (no offsets needed) decide whether a whole-text re-reading
# is worth building: words mixing letters and leet digits, and common English words as they
# read in rot13 ("the" -> "gur"), so the text is rotated only when the rotation reads as English.
_LEET_CANDIDATE = re2.compile(rb"(?i)\b[a-z0-9@$]*(?:[a-z][a-z0-9@$]*[013457@$]|[013457@$][a-z0-9@$]*[a-z])")
_COMMON_WORDS = ("the", "and", "you", "to", "of", "is", "that", "it", "for", "in", "are", "with", "this", "what", "how")
_COMMON_WORDS_IN_ROT13 = re2.compile(
    rb"(?i)\b(?:" + "|".join(codecs.encode(word, "rot13") for word in _COMMON_WORDS).encode() + rb")\b")


@dataclass(frozen=True, slots=True)
class DecodedView:
    """Text recovered from an encoded segment, and where that segment is in the scanned text."""

    encoding: str  # base64, hex, rot13, leetspeak
    start: int
    end: int
    text: str


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    return text if len(text) >= 8 and letters >= 0.8 * len(text) and " " in text.strip() else None


def decoded_views(text: str) -> list[DecodedView]:
    """Readable text hidden in base64/hex runs, plus rot13 and de-leeted views when plausible."""
    views: list[DecodedView] = []
    # RE2 scans the UTF-8 bytes: offsets are mapped back to characters only for what is kept.
    raw = text.encode()

    def view(encoding: str, start: int, end: int, decoded: str) -> DecodedView:
        return DecodedView(encoding, char_offset(raw, text, start), char_offset(raw, text, end), decoded)

    for m in _BASE64.finditer(raw):
        chunk = m.group().rstrip(b"=")
        if chunk.isalpha() or chunk.isdigit():  # plain words or numbers, not an encoding
            continue
        padded = chunk + b"=" * (-len(chunk) % 4)
        try:
            data = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        decoded = _readable(data[:_MAX_DECODED])
        if decoded:
            views.append(view("base64", m.start(), m.end(), decoded))
    for m in _HEX.finditer(raw):
        digits = m.group().replace(b" ", b"").replace(b":", b"")
        decoded = _readable(bytes.fromhex(digits[: len(digits) // 2 * 2].decode())[:_MAX_DECODED])
        if decoded:
            views.append(view("hex", m.start(), m.end(), decoded))
    if len(text) > _MAX_WHOLE_VIEW:
        return views  # whole-text re-readings are for prompts, not long documents
    if len(_LEET_CANDIDATE.findall(raw)) >= 2:
        leet = [m for m in _LEET_WORD.finditer(text) if not m.group().isdigit()]
        if len(leet) >= 2:
            views.append(DecodedView("leetspeak", 0, len(text),
                                     _LEET_WORD.sub(lambda m: m.group().translate(_LEET), text)))
    if len(_COMMON_WORDS_IN_ROT13.findall(raw)) >= 2:  # only when the rot13 reading has English in it
        views.append(DecodedView("rot13", 0, len(text), codecs.encode(text, "rot13")))
    return views
