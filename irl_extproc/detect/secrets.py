"""Secret recognizers: provider token formats, key blocks, credentials in URLs and
high-entropy strings that are not words or identifiers.

Provider formats are fixed, project-written, linear patterns (stdlib ``re`` is safe here).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import re2

from irl_extproc.detect import Match, resolve_overlaps
from irl_extproc.detect.gate import Gate


@dataclass(frozen=True, slots=True)
class Provider:
    kind: str
    regex: re.Pattern[str]
    score: float
    group: int = 0  # which group is the secret (0: the whole match)


def _p(kind: str, pattern: str, score: float = 0.95, group: int = 0, flags: int = 0) -> Provider:
    return Provider(kind, re.compile(pattern, flags), score, group)


_B = r"(?<![A-Za-z0-9_])"  # token start: not inside a longer identifier
_E = r"(?![A-Za-z0-9_])"

PROVIDERS: tuple[Provider, ...] = (
    _p("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?"
       r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?", 1.0),
    _p("aws_access_key", rf"{_B}(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{{16}}{_E}"),
    _p("aws_secret_key", r"(?i)aws.{0,20}(?:secret|access).{0,20}?[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
       0.9, 1),
    _p("gcp_api_key", rf"{_B}AIza[0-9A-Za-z_-]{{35}}{_E}"),
    _p("gcp_service_account", r"\"private_key_id\"\s*:\s*\"([0-9a-f]{40})\"", 0.95, 1),
    _p("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{86}==)", 0.95, 1),
    _p("azure_sas_token", r"[?&]sig=([A-Za-z0-9%+/]{40,}(?:%3D|=){0,2})", 0.85, 1),
    _p("github_token", rf"{_B}(?:gh[pousr]_[A-Za-z0-9]{{36,255}}|github_pat_[A-Za-z0-9_]{{82}}){_E}"),
    _p("gitlab_token", rf"{_B}(?:glpat-[A-Za-z0-9_-]{{20}}|gldt-[A-Za-z0-9_-]{{20}}|glcbt-[A-Za-z0-9_-]{{20}}"
       rf"|glptt-[A-Za-z0-9_-]{{40}}|glimt-[A-Za-z0-9_-]{{25}}|glrt-[A-Za-z0-9_-]{{20}}|glft-[A-Za-z0-9_-]{{20}}"
       rf"|glsoat-[A-Za-z0-9_-]{{20,}}[A-Za-z0-9]|glagent-[A-Za-z0-9_-]{{50,}}|gloas-[A-Za-z0-9_-]{{64}}"
       rf"|GR1348941[A-Za-z0-9_-]{{20}}){_E}(?!-)"),
    _p("slack_token", rf"{_B}xox[abposr]-(?:\d+-)?[0-9A-Za-z]{{6,}}(?:-[0-9A-Za-z]+)*{_E}"),
    _p("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
    _p("stripe_key", rf"{_B}(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{16,247}}{_E}"),
    _p("openai_key", rf"{_B}sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{{16,}}T3BlbkFJ[A-Za-z0-9_-]{{16,}}{_E}"
       rf"|{_B}sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{{58,}}{_E}"),
    _p("anthropic_key", rf"{_B}sk-ant-(?:api|admin|oat)\d{{2}}-[A-Za-z0-9_-]{{80,}}{_E}"),
    _p("huggingface_token", rf"{_B}hf_[A-Za-z0-9]{{34,}}{_E}"),
    _p("npm_token", rf"{_B}npm_[A-Za-z0-9]{{36}}{_E}|//[\w.-]+/:_authToken=\s*([^\s$\"']{{8,}})", 0.95),
    _p("pypi_token", rf"{_B}pypi-AgE[A-Za-z0-9_-]{{90,}}"),
    _p("sendgrid_key", rf"{_B}SG\.[A-Za-z0-9_-]{{22}}\.[A-Za-z0-9_-]{{43}}{_E}"),
    _p("twilio_key", rf"{_B}(?:SK|AC)[0-9a-f]{{32}}{_E}", 0.8),
    _p("mailchimp_key", rf"{_B}[0-9a-f]{{32}}-us\d{{1,2}}{_E}", 0.9),
    _p("telegram_bot_token", rf"(?<![\w:])\d{{8,10}}:AA[A-Za-z0-9_-]{{33}}{_E}", 0.9),
    _p("discord_bot_token", rf"{_B}[MNO][A-Za-z0-9_-]{{23,25}}\.[A-Za-z0-9_-]{{6}}\.[A-Za-z0-9_-]{{27,38}}{_E}", 0.9),
    _p("square_oauth", rf"{_B}sq0csp-[0-9A-Za-z_-]{{43}}", 0.95),
)
# Placeholders people paste instead of real values.
_PLACEHOLDER = re.compile(
    r"^(?:x+|\*+|\.+|<[^>]*>|\$\{?[A-Za-z_][\w.]*\}?|%\(?\w*\)?s|\{\{[^}]*\}\}|your[_-]?\w*|changeme|password|"
    r"passwd|secret|example\w*|dummy\w*|fake\w*|test\w*|redacted|none|null|true|false|insert\w*|todo|xxx\w*)$",
    re.IGNORECASE,
)


def _jwt_ok(token: str) -> bool:
    """A JWT's header must decode to a JSON object naming an algorithm."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


_JWT = re.compile(rf"{_B}eyJ[A-Za-z0-9_-]{{10,}}\.eyJ[A-Za-z0-9_-]{{10,}}(?:\.[A-Za-z0-9_-]{{8,}})?{_E}")
_URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@\"'<>]{1,64}:([^\s:/@\"'<>]{1,128})@[\w.-]+")
_ASSIGNMENT = re.compile(
    r"(?i)\b[\w.-]{0,24}(?:secret|token|passw(?:or)?d|passwd|pwd|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|"
    r"client[_-]?secret|credentials?)[\w.-]{0,16}[\"']?\s*(?::=|=>|[:=])\s*[\"']?([^\s\"',;]{8,200})"
)
# RE2 scanning left to right finds each run whole; runs longer than a key are skipped.
_CANDIDATE = re2.compile(r"[A-Za-z0-9+/_=.-]{20,}")
_MAX_TOKEN = 200
_WORDISH = re.compile(r"[A-Za-z]{3,}")
_HEX_ONLY = re.compile(r"[0-9a-fA-F]+")
_PUBLIC_PREFIXES = ("pk_live_", "pk_test_")  # publishable keys are meant to be seen
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(value: str) -> bool:
    """High entropy and a mix of character classes, and not a path, identifier or sentence."""
    is_path = "/" in value.strip("/") and value.count("/") > 2
    if value.startswith(_PUBLIC_PREFIXES) or _PLACEHOLDER.match(value) or _UUID.fullmatch(value) or is_path:
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    if _HEX_ONLY.fullmatch(value):
        return len(value) >= 32 and entropy(value) > 3.0 and classes >= 2
    if classes < 3 or entropy(value) < 3.7:
        return False
    # snake_case / kebab-case / dotted identifiers built from words are names, not keys.
    pieces = re.split(r"[_.\-/]", value)
    word_chars = sum(len(w) for p in pieces for w in _WORDISH.findall(p) if w.islower() or w.istitle())
    return word_chars < 0.6 * len(value)


_PROVIDER_GATE = Gate([p.regex.pattern for p in PROVIDERS])


def _providers(text: str) -> Iterator[Match]:
    for index in _PROVIDER_GATE.candidates(text):
        p = PROVIDERS[index]
        for m in p.regex.finditer(text):
            group = p.group if p.group and m.group(p.group) is not None else 0
            if m.lastindex and not p.group and m.group(m.lastindex) is not None:
                group = m.lastindex  # alternatives with a value group (npm's .npmrc form)
            value = m.group(group)
            if _PLACEHOLDER.match(value):
                continue
            yield Match(p.kind, m.start(group), m.end(group), p.score, f"{p.kind}.format")


_KEYWORD = re2.compile(r"(?i)secret|token|passw|passwd|pwd|api.?key|apikey|access.?key|auth.?key|credential")


def _generic(text: str) -> Iterator[Match]:
    # Cheap literal checks first: most text has no JWT, no URL userinfo and no key words.
    if "eyJ" in text:
        yield from _jwts(text)
    if "://" in text and "@" in text:
        for m in _URL_CREDENTIALS.finditer(text):
            if not _PLACEHOLDER.match(m.group(1)):
                yield Match("url_credentials", m.start(1), m.end(1), 0.9, "url_credentials.userinfo")
    if _KEYWORD.search(text) is None:
        return
    for m in _ASSIGNMENT.finditer(text):
        value = m.group(1)
        if not _PLACEHOLDER.match(value) and (looks_random(value) or (entropy(value) >= 3.0 and len(value) >= 12)):
            yield Match("credential_assignment", m.start(1), m.end(1), 0.75, "assignment.entropy")


def _jwts(text: str) -> Iterator[Match]:
    for m in _JWT.finditer(text):
        if _jwt_ok(m.group()):
            yield Match("jwt", m.start(), m.end(), 0.9, "jwt.header")


def _high_entropy(text: str) -> Iterator[Match]:
    for m in _CANDIDATE.finditer(text):
        if len(m.group()) > _MAX_TOKEN:
            continue
        value = m.group().strip("=.")
        if looks_random(value):
            # Bare hex is usually a digest or commit id; it needs a keyword (assignment) to count.
            score = 0.45 if _HEX_ONLY.fullmatch(value) else 0.6
            yield Match("high_entropy", m.start(), m.start() + len(value), score, "high_entropy.entropy")


def detect_secrets(text: str, min_score: float = 0.5, entropy_scan: bool = True) -> list[Match]:
    """Secrets in a text: provider formats, JWTs, URL credentials, keyed assignments and,
    with ``entropy_scan``, random-looking tokens that are not words or identifiers."""
    found = [*_providers(text), *_generic(text)]
    if entropy_scan:
        found += _high_entropy(text)
    return [m for m in resolve_overlaps(found) if m.score >= min_score]
