"""Prompt-injection detection: normalisation, family heuristics and a linear classifier.

The classifier is a logistic regression over L2-normalised features (the distinct words of
the normalised text with their character 4-grams), trained offline by
``scripts/train_injection.py``. Inference is about one dictionary lookup per distinct word and
needs no numeric library. Long texts are scored in windows so one injected paragraph in a long
document is not diluted by the rest.

Word bigrams were tried as features: held-out quality was no better (sources, or whole
repositories, held out) and they cost more than half of the scan on long text.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import string
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from itertools import repeat
from typing import Any

from irl_extproc.detect.injection_rules import RuleHit, combine, heuristic_score, rule_hits
from irl_extproc.detect.normalize import Normalized, decoded_views, normalize

WEIGHTS_FILE = "injection_weights.json.gz"
WINDOW = 2048  # characters per classifier window

# Punctuation is kept as tokens of its own (optimisation suffixes and delimiter tricks live in
# it); str.replace per mark present is memchr-fast, unlike translate with multi-character values.
_PUNCTUATION = tuple(string.punctuation.replace("'", "") + "\u201c\u201d\u201e\u00ab\u00bb\u2014\u2013\u2026")


def tokens(text: str) -> list[str]:
    """The classifier's tokens of a text: lower-case words, digit runs folded to 0, punctuation."""
    lower = text.lower()
    for digit in "123456789":
        if digit in lower:
            lower = lower.replace(digit, "0")
    for quote in "\u2018\u2019":
        if quote in lower:
            lower = lower.replace(quote, "'")
    for mark in _PUNCTUATION:
        if mark in lower:
            lower = lower.replace(mark, f" {mark} ")
    return lower.split()


def char_grams(word: str) -> list[str]:
    """Character 4-grams of `` word `` (with repeats): subword evidence that survives misspelling."""
    return list(map(f" {word} ".__getitem__, _GRAMS[: len(word) - 1]))


# The slices of a padded word that are its 4-grams; a token never outgrows its window.
_GRAMS = tuple(slice(i, i + 4) for i in range(WINDOW))


@dataclass
class LinearModel:
    """Logistic regression over words, each with its character 4-grams.

    A text's feature vector counts, for each distinct word, the word and its 4-grams, scaled to
    unit length (``1/sqrt(n)``). A word therefore contributes a fixed amount, cached after its
    first sighting, so scoring costs about one dictionary lookup per distinct word. Every
    distinct word contributes ``len(word)`` features (itself plus ``len(word) - 1`` grams),
    which gives ``n``.
    """

    word_weights: dict[str, float]
    char_weights: dict[str, float]
    bias: float
    calibration: tuple[float, float]  # p = sigmoid(a * logit + b), fitted on held-out folds
    _word_cache: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._remember(set(self.word_weights))  # the known vocabulary is scored once, at load

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearModel:
        a, b = data["calibration"]
        return cls(data["word_weights"], data["char_weights"], float(data["bias"]), (float(a), float(b)))

    def _word_score(self, word: str) -> float:
        return self.word_weights.get(word, 0.0) + sum(map(self.char_weights.get, char_grams(word), repeat(0.0)))

    def _remember(self, words: set[str]) -> None:
        """Score words not seen before; the cache starts over (vocabulary kept) when full."""
        cache = self._word_cache
        if len(cache) + len(words) > _WORD_CACHE_SIZE:
            vocabulary = {word: cache[word] for word in self.word_weights}
            cache.clear()
            cache.update(vocabulary)
        for word in words:
            cache[word] = self._word_score(word)

    def logit(self, words: list[str]) -> float:
        distinct = set(words)
        n = len("".join(distinct))  # the summed lengths, without a call per word
        if n == 0:
            return self.bias
        unseen = distinct.difference(self._word_cache)
        if unseen:
            self._remember(unseen)
        return self.bias + sum(map(self._word_cache.__getitem__, distinct)) / math.sqrt(n)

    def probability(self, words: list[str]) -> float:
        a, b = self.calibration
        return _sigmoid(a * self.logit(words) + b)


_WORD_CACHE_SIZE = 200_000  # distinct words remembered per model; bounded so memory cannot grow forever


def _sigmoid(x: float) -> float:
    if x < -40:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@cache
def shipped_model() -> LinearModel | None:
    """The weights shipped as package data (None if the package was built without them)."""
    try:
        raw = resources.files("irl_extproc.data").joinpath(WEIGHTS_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return LinearModel.from_json(json.loads(gzip.decompress(raw)))


def windows(text: str, size: int = WINDOW) -> list[tuple[int, int]]:
    """Spans of at most ``size`` characters, cut at whitespace where possible."""
    spans, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        end = cut if cut > start else start + size
        spans.append((start, end))
        start = end
    spans.append((start, len(text)))
    return spans


# --- adversarial gibberish suffixes (GCG-style) ----------------------------------------------

_ODD = re.compile(r"[{}\[\]()\\<>|=*^~$`_\"'@#%&+/]")
_WEIRD = re.compile(r"[^\w\s.,!?:;'-]")
_CAMEL = re.compile(r"[a-z][A-Z]")
_SUFFIX_TOKENS = 25
_SUFFIX_REGION = 1500  # characters at the end of the text that the heuristic reads
# Code and data look symbol-heavy too; their keywords and key/value shapes are not suffix noise.
_CODE = re.compile(
    r"\b(?:SELECT|FROM|WHERE|null|true|false|def|return|function|const|let|var|import)\b|\"\s*:\s"
    r"|\d\s*[-+*/^=<>]\s*\(?\d|[a-z]\^\d|=\s*-?\d|\\(?:frac|sqrt|int|sum|cdot|times|alpha|beta|pi|le|ge)\b"
    r"|==|!=|&&|\+\+"
)


_TALKS_ABOUT_CODE = re.compile(
    r"(?i)\b(?:syntax|regex|regexp|snippet|expression|code|command|markdown|template|bash|shell|python|json|yaml|"
    r"html|css|sql|query|function|variable|script|formula|equation|latex|jinja|c\+\+|javascript|typescript|"
    r"rust|golang|java|ruby|php|perl|kotlin|swift|scala|haskell|lua|in c|c#)\b|`"
)


def gibberish_suffix(text: str) -> float:
    """Prose followed by a one-line run of symbol-glued, camel-joined tokens (optimised suffixes).

    Code and formulas are excluded by asking the head to be plain prose and the tail to be
    on one line.
    """
    tokens = text[-_SUFFIX_REGION:].split()  # the suffix and the prose just before it
    if len(tokens) < 8 or "\n" in text.strip()[-200:]:
        return 0.0
    tail = tokens[-_SUFFIX_TOKENS:]
    head = " ".join(tokens[:-_SUFFIX_TOKENS]) or " ".join(tokens[:3])
    if len(_ODD.findall(head)) > 0.02 * len(head):
        return 0.0
    tail_text = " ".join(tail)
    if _CODE.search(tail_text):
        return 0.0
    odd = len(_ODD.findall(tail_text))
    flags = [bool(_WEIRD.search(t.strip(".,!?:;")) or _CAMEL.search(t)) for t in tail]
    if sum(flags) < 2 or odd < 5:
        return 0.0
    # A question about code names what it quotes ("what does this regex ... mean?").
    lead_in = " ".join(tokens[: len(tokens) - len(tail) + flags.index(True)])
    if _TALKS_ABOUT_CODE.search(lead_in):
        return 0.0
    glued = sum(flags)
    return min(0.6 + 0.02 * (odd - 5) + 0.03 * (glued - 2), 0.9)


# --- the detector ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason for the score: which layer, which rule, where (offsets in the original text)."""

    layer: str  # heuristic, classifier, normalization
    rule: str
    score: float
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float  # calibrated, in [0, 1]
    evidence: tuple[Evidence, ...]


def _hit_evidence(hits: list[RuleHit], norm: Normalized, length: int, prefix: str = "") -> list[Evidence]:
    out = []
    for h in hits:
        start, end = norm.span(h.start, h.end, length)
        out.append(Evidence("heuristic", f"{prefix}{h.rule.family}.{h.rule.name}", h.rule.weight, start, end))
    return out


def scan(text: str, model: LinearModel | None = None, use_classifier: bool = True) -> Verdict:
    """Score a text for injection; the evidence names each layer that contributed."""
    norm = normalize(text)
    lower = norm.text.lower()
    hits = rule_hits(lower)
    evidence = _hit_evidence(hits, norm, len(text))
    scores = [heuristic_score(hits)]
    for view in decoded_views(norm.text):
        view_hits = rule_hits(view.text.lower())
        if view_hits and not (view.encoding in ("rot13", "leetspeak") and hits):
            # An instruction that only appears once decoded was hidden on purpose.
            scores.append(combine([heuristic_score(view_hits), 0.5]))
            start, end = norm.span(view.start, view.end, len(text))
            for h in view_hits:
                evidence.append(Evidence("normalization", f"{view.encoding}:{h.rule.family}.{h.rule.name}",
                                         h.rule.weight, start, end))
    if "tag_smuggling" in norm.signals:
        scores.append(0.85)  # nobody sends invisible tag characters by accident
        evidence.append(Evidence("normalization", "tag_smuggling", 0.85, 0, len(text)))
    gibberish = gibberish_suffix(norm.text)
    if gibberish:
        scores.append(gibberish)
        tail_start = len(norm.text) - len(" ".join(norm.text.split()[-_SUFFIX_TOKENS:]))
        start, end = norm.span(max(tail_start, 0), len(norm.text), len(text))
        evidence.append(Evidence("heuristic", "adversarial_suffix.gibberish", gibberish, start, end))
    model = model if model is not None else shipped_model()
    if use_classifier and model is not None:
        best, best_span = 0.0, (0, len(text))
        for start, end in windows(norm.text):
            p = model.probability(tokens(norm.text[start:end]))
            if p > best:
                best, best_span = p, norm.span(start, end, len(text))
        scores.append(best)
        evidence.append(Evidence("classifier", "linear.ngrams", best, *best_span))
    score = max(scores)
    if "homoglyphs" in norm.signals or "invisible_chars" in norm.signals:
        # Obfuscation alone is weak evidence, but it strengthens whatever else was found.
        score = combine([score, 0.15]) if score >= 0.3 else score
    return Verdict(round(score, 4), tuple(evidence))
