"""PII recognizers: validators accept real shapes and reject look-alikes; masking round-trips."""

from __future__ import annotations

import random

import pytest

from irl_extproc.codecs.base import apply_redactions
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.detect.pii import (
    _EMAIL,
    _EMAIL_RUN,
    _PHONE,
    _PHONE_DIGITS,
    card_issuer,
    detect_pii,
    iban_ok,
    luhn_ok,
)
from irl_extproc.detect.regions import finditer_near
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.pii import Pii, PiiConfig
from irl_extproc.masking import Masker, partial, restore, restore_conversation

pytestmark = pytest.mark.unit


def kinds(text: str) -> list[tuple[str, str]]:
    return [(m.kind, text[m.start:m.end]) for m in detect_pii(text)]


@pytest.mark.parametrize(("text", "expected"), [
    ("mail jane.doe+x@mail.example.org now", [("email", "jane.doe+x@mail.example.org")]),
    ("card 4111 1111 1111 1111 exp", [("credit_card", "4111 1111 1111 1111")]),
    ("amex 378282246310005.", [("credit_card", "378282246310005")]),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", [("iban", "GB82 WEST 1234 5698 7654 32")]),
    ("my SSN is 536-22-1234", [("us_ssn", "536-22-1234")]),
    ("ITIN 912-70-1234 on file", [("us_itin", "912-70-1234")]),
    ("server 192.168.10.20 and 2001:db8::8a2e:370:7334", [("ip_address", "192.168.10.20"),
                                                          ("ip_address", "2001:db8::8a2e:370:7334")]),
    ("nic 00:1A:2B:3C:4D:5E", [("mac_address", "00:1A:2B:3C:4D:5E")]),
    ("call me at +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
    ("phone: (415) 555-0132", [("phone", "(415) 555-0132")]),
    ("my passport number is 123456789", [("us_passport", "123456789")]),
    ("she was born on 3/14/1985", [("date_of_birth", "3/14/1985")]),
])
def test_finds_valid_pii(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",          # Luhn fails
    "IBAN GB82 WEST 1234 5698 7654 33",  # mod 97 fails
    "ssn 000-12-3456 and 666-12-3456",   # never-issued areas
    "version 1.2.3.4 released",          # not an address in context (score below threshold)
    "the meeting is on 3/14/1985",       # a date, but nothing says it is a birth date
    "order 123456789 shipped",           # nine digits without passport context
    "temperature 300.5 and 999",
])
def test_rejects_look_alikes(text: str) -> None:
    assert kinds(text) == []


def test_validators() -> None:
    assert luhn_ok("4539578763621486")
    assert not luhn_ok("4539578763621487")
    assert card_issuer("5555555555554444") == "mastercard"
    assert card_issuer("9999999999999995") is None
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("DE89370400440532013001")


def test_redaction_placeholders_are_stable_and_reversible() -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": "mail bob@example.com, card 4111111111111111"},
        {"role": "user", "content": "again bob@example.com"},
    ]}
    conversation = OpenAIChat().decode_request(body)
    context = CheckContext("svc/route")
    findings = Pii(PiiConfig(restore=True)).check(conversation, context)
    apply_redactions(conversation, findings)
    assert body["messages"][0]["content"] == "mail [EMAIL_1], card [CREDIT_CARD_1]"
    assert body["messages"][1]["content"] == "again [EMAIL_1]"
    assert restore("Sent to [EMAIL_1] from [PHONE_7].", context) == "Sent to bob@example.com from [PHONE_7]."
    reply = OpenAIChat().decode_response({"choices": [{"message": {"role": "assistant",
                                                                  "content": "I wrote to [EMAIL_1]."}}]})
    assert restore_conversation(reply, context) == 1
    assert reply.body["choices"][0]["message"]["content"] == "I wrote to bob@example.com."
    # Another stream has its own numbering and no mapping.
    assert restore("[EMAIL_1]", CheckContext("svc/route")) == "[EMAIL_1]"


def test_findings_hold_spans_not_values() -> None:
    conversation = OpenAIChat().decode_request({"messages": [{"role": "user", "content": "ssn 536-22-1234"}]})
    [finding] = Pii(PiiConfig(redaction="partial")).check(conversation, CheckContext("r"))
    assert "536-22-1234" not in finding.message + finding.rule
    assert (finding.start, finding.end, finding.replacement) == (4, 15, "****1234")


def test_masking_strategies(monkeypatch: pytest.MonkeyPatch) -> None:
    assert partial("bob@example.com") == "****@example.com"
    assert partial("12") == "****"
    monkeypatch.setenv("IRL_MASK_KEY", "k" * 32)
    from irl_extproc.invariants.common import masker_for

    hashed = masker_for(PiiConfig(redaction="hash"))
    one = hashed.mask("email", "a@b.co", CheckContext("r"))
    assert one == hashed.mask("email", "a@b.co", CheckContext("other"))
    assert one.startswith("[EMAIL:")
    assert Masker("remove").mask("email", "a@b.co", CheckContext("r")) == ""


def test_hash_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRL_MASK_KEY", raising=False)
    with pytest.raises(ValueError, match="IRL_MASK_KEY"):
        Pii(PiiConfig(redaction="hash"))


def test_restore_needs_placeholders() -> None:
    with pytest.raises(ValueError, match="restore: true needs redaction: placeholder"):
        PiiConfig(restore=True, redaction="partial")


def test_scanning_near_digit_runs_finds_what_a_full_scan_finds() -> None:
    """The phone and e-mail scans read only windows around RE2-found runs: same matches."""
    rng = random.Random(11)
    pieces = ["call", "+1 (415) 555-0132", "x12", " ext. 9", "jane.doe@example.com", "a@b@c.org", "(", "+",
              "00 44 20 7946 0958", "2024-01-02", "3.14", "é", "tel:", "555 0100", "١٢٣٤٥٦٧٨", "-", "/"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 12)))
        for pattern, runs, before, after in ((_PHONE, _PHONE_DIGITS, 4, 20), (_EMAIL, _EMAIL_RUN, 0, 1)):
            assert [m.span() for m in finditer_near(pattern, text, runs, before, after)] == [
                m.span() for m in pattern.finditer(text)], text
