"""PII recognizers: candidate patterns, then a validator (checksum, issuer range, number plan)
and context words that raise or lower the score.

The patterns are fixed, project-written and linear (no nested ambiguous repetition), so the
stdlib ``re`` engine is safe here; operator patterns go through RE2 elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from functools import lru_cache

import phonenumbers
import re2

from irl_extproc.detect import Match, resolve_overlaps
from irl_extproc.detect.gate import Gate
from irl_extproc.detect.regions import finditer_near

PII_TYPES = (
    "email", "phone", "credit_card", "iban", "us_ssn", "us_itin", "ip_address", "mac_address",
    "us_passport", "us_driver_license", "date_of_birth", "street_address",
)
# Types whose validators make them reliable without context; the default scan set.
DEFAULT_TYPES = ("email", "phone", "credit_card", "iban", "us_ssn", "us_itin", "ip_address", "mac_address",
                 "us_passport", "us_driver_license", "date_of_birth")

_CONTEXT_BEFORE = 48
_CONTEXT_AFTER = 24


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")", re.IGNORECASE)


_CONTEXT = {
    "phone": _words("phone", "tel", "telephone", "call", "mobile", "cell", "fax", "contact", "reach", "dial",
                    "number", "whatsapp", "sms", "text me", "hotline", "ext", "answer", "messag", "registered",
                    "desk", "office", "ring", "landline"),
    "credit_card": _words("card", "credit", "debit", "visa", "mastercard", "amex", "payment", "pay", "cc"),
    "iban": _words("iban", "bank", "account", "transfer", "wire", "sepa"),
    "us_ssn": _words("ssn", "social security", "social sec", "ss#", "ss no"),
    "us_itin": _words("itin", "taxpayer", "tax id", "tin"),
    "ip_address": _words("ip", "address", "host", "server", "ping", "connect"),
    "us_passport": _words("passport"),
    "us_driver_license": _words(r"driver'?s?\W{0,2}licen[cs]e", "driving licen[cs]e", "dl",
                                r"licen[cs]e\s*(?:no|number|#)"),
    "date_of_birth": _words("born", "birth", "dob", "d\\.o\\.b", "birthday", "age"),
}
_NEGATIVE_CONTEXT = {
    "phone": _words("order", "invoice", "tracking", "ref", "reference", "isbn", "serial", "id", "version",
                    "account"),
    "ip_address": _words("version", "v", "release", "build", "section", "chapter"),
    "credit_card": _words("order", "tracking", "isbn", "invoice"),
}


def _has_context(kind: str, lower: str, start: int, end: int, table: dict[str, re.Pattern[str]]) -> bool:
    regex = table.get(kind)
    if regex is None:
        return False
    window = lower[max(0, start - _CONTEXT_BEFORE):start] + " " + lower[end:end + _CONTEXT_AFTER]
    return regex.search(window) is not None


# --- e-mail ---------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


# Every e-mail lies inside one run of these characters (its lookahead reads one more).
_EMAIL_RUN = re2.compile(rb"[A-Za-z0-9._%+-]*@[A-Za-z0-9.-]*")


def _emails(text: str) -> Iterator[Match]:
    for m in finditer_near(_EMAIL, text, _EMAIL_RUN, 0, 1):
        yield Match("email", m.start(), m.end(), 0.95, "email.pattern")


# --- credit cards: Luhn + issuer ranges ------------------------------------------------------

_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    """The card network a number's prefix and length belong to (None: no known issuer)."""
    n = len(digits)
    p2, p4, p6 = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or p2 == 65 or 644 <= p4 // 10 <= 649 or 622126 <= p6 <= 622925) and 16 <= n <= 19:
        return "discover"
    if (300 <= p4 // 10 <= 305 or p2 in (36, 38, 39) or p4 == 3095) and 14 <= n <= 19:
        return "diners"
    if (p2 == 35 and 16 <= n <= 19) or (p4 in (1800, 2131) and n == 15):  # incl. legacy 15-digit JCB
        return "jcb"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if (p2 == 50 or 56 <= p2 <= 69 or p4 == 604) and 12 <= n <= 19:
        return "maestro"
    return None


def _cards(text: str) -> Iterator[Match]:
    for m in _CARD.finditer(text):
        # A greedy run may glue a card to a neighbouring number: try group-wise prefixes too.
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", m.group())]
        for last in range(len(groups), 0, -1):
            end = m.start() + groups[last - 1][1]
            digits = re.sub(r"\D", "", text[m.start():end])
            if 12 <= len(digits) <= 19 and luhn_ok(digits) and card_issuer(digits):
                yield Match("credit_card", m.start(), end, 0.9, "credit_card.luhn")
                break


# --- IBAN: country length + mod 97 -----------------------------------------------------------

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")


def iban_ok(compact: str) -> bool:
    compact = compact.upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ibans(text: str) -> Iterator[Match]:
    for m in _IBAN.finditer(text):
        want = _IBAN_LENGTHS.get(m.group()[:2].upper())
        if want is None:
            continue
        # Walk to the country's length so a following word is not glued on.
        count, end = 0, m.start()
        while end < m.end() and count < want:
            count += text[end] != " "
            end += 1
        complete = count == want and (end == len(text) or not text[end].isalnum())
        if complete and iban_ok(text[m.start():end].replace(" ", "")):
            yield Match("iban", m.start(), end, 0.95, "iban.mod97")


# --- US SSN and ITIN -------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\d-])(\d{3})([- .]?)(\d{2})\2(\d{4})(?![\d-])")
_SSN_SAMPLES = {"078051120", "219099999", "123456789"}  # published example numbers, never issued


def _ssns(text: str, lower: str) -> Iterator[Match]:
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        if area[0] == "9":
            kind, ok = "us_itin", 50 <= int(group) <= 65 or 70 <= int(group) <= 88 or int(group) in (
                90, 91, 92, 94, 95, 96, 97, 98, 99)
        else:
            kind = "us_ssn"
            ok = area not in ("000", "666") and group != "00" and serial != "0000"
            ok = ok and (area + group + serial) not in _SSN_SAMPLES
        if not ok:
            continue
        context = _has_context(kind, lower, m.start(), m.end(), _CONTEXT)
        score = {"-": 0.85, " ": 0.5, ".": 0.4, "": 0.3}[sep] + (0.4 if context else 0.0)
        yield Match(kind, m.start(), m.end(), min(score, 1.0), f"{kind}.rules")


# --- IP and MAC ------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\d|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_MAC = re.compile(
    r"(?<![\w:-])[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}(?![\w:-])"
    r"|(?<![\w.])[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![\w.])"
)


def _ips(text: str, lower: str) -> Iterator[Match]:
    for m in _IPV4.finditer(text):
        negative = _has_context("ip_address", lower, m.start(), m.end(), _NEGATIVE_CONTEXT)
        yield Match("ip_address", m.start(), m.end(), 0.4 if negative else 0.85, "ip_address.v4")
    if ":" not in text:
        return
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if candidate.count(":") < 2 or ("::" not in candidate and candidate.count(":") != 7):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield Match("ip_address", m.start(), m.end(), 0.85, "ip_address.v6")


def _macs(text: str) -> Iterator[Match]:
    for m in _MAC.finditer(text):
        yield Match("mac_address", m.start(), m.end(), 0.85, "mac_address.pattern")


# --- phone numbers (libphonenumber's number plans) ------------------------------------------

_PHONE = re.compile(
    # Starts at "(" or "+" not glued to digits, or at a digit not inside a word or number.
    r"(?:(?<![\d@)+*])\( ?\+?|(?<![\d@+])\+|\b00|(?<![\w+@.\-/#*]))"
    r" ?\d[\d ().\-/]{4,22}\d"
    r"(?: ?(?:x|ext\.?|extension) ?\d{1,6})?(?![\w@:]|[.\-/]\d)",
    re.IGNORECASE,
)
_NOT_PHONE = re.compile(r"\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}|\d+\.\d+")  # dates, decimals
_EXTENSION = re.compile(r" ?(?:x|ext\.?|extension) ?\d{1,6}$", re.IGNORECASE)


@lru_cache(maxsize=4096)  # chat histories resend the same numbers on every turn
def _phone_score(candidate: str) -> float:
    """How much libphonenumber's number plans support a candidate (before context)."""
    number_part = _EXTENSION.sub("", candidate)
    digits = re.sub(r"\D", "", number_part)
    if not 7 <= len(digits) <= 15 or _NOT_PHONE.fullmatch(number_part.strip("() ")):
        return 0.0
    international = "+" in number_part[:3] or number_part.startswith("00")
    text = "+" + number_part[2:] if number_part.startswith("00") else number_part
    try:
        number = phonenumbers.parse(text, None if international else "US")
    except phonenumbers.NumberParseException:
        return 0.0
    if phonenumbers.is_valid_number(number):
        return 0.9 if international else 0.75
    # Other national plans: plausible length and grouping, left to context to confirm.
    return 0.45 if phonenumbers.is_possible_number(number) or 8 <= len(digits) <= 12 else 0.2


# A phone's digits form one run of these characters (``\d`` as Python reads it: any decimal
# digit); the match starts at most 4 characters before it ("( +1") and, with an extension and
# the lookahead, reads at most 20 characters past it.
_PHONE_DIGITS = re2.compile(r"\p{Nd}[\p{Nd} ().\-/]*\p{Nd}")


def _phones(text: str, lower: str) -> Iterator[Match]:
    for m in finditer_near(_PHONE, text, _PHONE_DIGITS, 4, 20):
        candidate = m.group().rstrip(" (.-/")
        skipped = len(candidate) - len(candidate.lstrip())
        candidate = candidate.lstrip()
        if candidate.count("(") < candidate.count(")"):
            candidate = candidate.rstrip(")")
        start = m.start() + skipped
        end = start + len(candidate)
        if candidate.startswith("(") and ")" not in candidate:
            candidate, start = candidate[1:].lstrip(), start + len(candidate) - len(candidate[1:].lstrip())
        score = _phone_score(candidate)
        if score == 0.0:
            continue
        if _has_context("phone", lower, start, end, _CONTEXT):
            score += 0.3
        elif _has_context("phone", lower, start, end, _NEGATIVE_CONTEXT):
            score -= 0.3
        yield Match("phone", start, end, min(score, 1.0), "phone.libphonenumber")


# --- context-dependent identifiers -----------------------------------------------------------

_PASSPORT = re.compile(r"(?<![\w-])[A-Za-z]?\d{8,9}(?![\w-])")
_LICENSE = re.compile(r"(?<![\w-])(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{4,16}[A-Za-z0-9](?![\w-])")
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = re.compile(
    rf"(?<![\w/.-])(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:19|20)?\d{{2}}|(?:19|20)\d{{2}}-\d{{2}}-\d{{2}}"
    rf"|{_MONTHS} \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d{{2}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?{_MONTHS},? (?:19|20)\d{{2}})"
    r"(?![\w/-])",
    re.IGNORECASE,
)


def _in_context(kind: str, regex: re.Pattern[str], text: str, lower: str, score: float) -> Iterator[Match]:
    if _CONTEXT[kind].search(lower) is None:  # cheap whole-text gate before the candidate scan
        return
    for m in regex.finditer(text):
        if _has_context(kind, lower, m.start(), m.end(), _CONTEXT):
            yield Match(kind, m.start(), m.end(), score, f"{kind}.context")


# --- street addresses (US/UK-style, capitalised; precise rather than complete) ---------------

_STREET = re.compile(
    r"\b\d{1,6}(?: [A-Z][a-z]+\.?){1,4} (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|"
    r"Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Crescent)\.?"
    r"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|#)\.? ?[A-Za-z0-9-]{1,6})?"
    r"(?:,? [A-Z][a-z]+(?: [A-Z][a-z]+){0,2},? [A-Z]{2} \d{5}(?:-\d{4})?)?(?!\w)"
)


def _addresses(text: str) -> Iterator[Match]:
    for m in _STREET.finditer(text):
        yield Match("street_address", m.start(), m.end(), 0.7, "street_address.pattern")


_Recognizer = Callable[[str, str], Iterator[Match]]
_RECOGNIZERS: dict[str, _Recognizer] = {
    "email": lambda t, low: _emails(t),
    "phone": _phones,
    "credit_card": lambda t, low: _cards(t),
    "iban": lambda t, low: _ibans(t),
    "us_ssn": _ssns,
    "ip_address": _ips,
    "mac_address": lambda t, low: _macs(t),
    "us_passport": lambda t, low: _in_context("us_passport", _PASSPORT, t, low, 0.85),
    "us_driver_license": lambda t, low: _in_context("us_driver_license", _LICENSE, t, low, 0.8),
    "date_of_birth": lambda t, low: _in_context("date_of_birth", _DATE, t, low, 0.85),
    "street_address": lambda t, low: _addresses(t),
}
# Cheap gates: a scan runs only when the text has at least this many digits.
_MIN_DIGITS = {"phone": 7, "credit_card": 12, "iban": 2, "us_ssn": 9, "ip_address": 1, "us_passport": 8,
               "us_driver_license": 1, "date_of_birth": 4, "street_address": 1}
# us_itin comes from the SSN scan (same shape, area 9xx); the scan runs once for both.
_SCAN_OWNER = {"us_itin": "us_ssn"}


# Loose shapes, one RE2 pass for all: a recognizer runs only if its shape occurs at all.
_SHAPES = {
    "email": r"[A-Za-z0-9]@[A-Za-z0-9-]+\.",
    "phone": r"\d[\d ().\-/]{5,22}\d",
    "credit_card": r"\d(?:[ -]?\d){11,18}",
    "iban": r"[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}",
    "us_ssn": r"\d{3}[- .]?\d{2}[- .]?\d{4}",
    "ip_address": r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:",
    "mac_address": r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.",
    "us_passport": r"(?i)passport",
    "us_driver_license": r"(?i)licen[cs]e|\bdl\b",
    "date_of_birth": r"(?i)born|birth|\bdob\b|d\.o\.b|\bage\b",
    "street_address": r"\d{1,6}(?: [A-Z][a-z]+\.?){1,4} [A-Z][a-z]",
}
_SHAPE_NAMES = tuple(_SHAPES)
_SHAPE_GATE = Gate(list(_SHAPES.values()))


def detect_pii(text: str, types: tuple[str, ...] = DEFAULT_TYPES, min_score: float = 0.5) -> list[Match]:
    """Validated PII spans of the given types scoring at least ``min_score``, non-overlapping."""
    lower = text.lower()
    wanted = set(types)
    digits = sum(map(text.count, "0123456789"))
    present = {_SHAPE_NAMES[i] for i in _SHAPE_GATE.candidates(text)}
    scans = {_SCAN_OWNER.get(t, t) for t in wanted} & present
    scans = {s for s in scans if digits >= _MIN_DIGITS.get(s, 0)}
    found = [m for scan in scans for m in _RECOGNIZERS[scan](text, lower)]
    # Resolve overlaps among all candidates first, so a card is not also a phone.
    return [m for m in resolve_overlaps(found) if m.kind in wanted and m.score >= min_score]
