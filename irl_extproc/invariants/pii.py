"""PII: validated e-mail, phone, card, IBAN, SSN/ITIN, IP, MAC and context-confirmed identifiers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from irl_extproc.conversation import Conversation, Segment
from irl_extproc.detect.holdback import pii_hold
from irl_extproc.detect.pii import DEFAULT_TYPES, detect_pii
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import MaskedConfig, in_scope, masked_findings, masker_for

PiiType = Literal[
    "email", "phone", "credit_card", "iban", "us_ssn", "us_itin", "ip_address", "mac_address",
    "us_passport", "us_driver_license", "date_of_birth", "street_address",
]
# Identifiers that are only reported when words around them say what they are.
_CONTEXT_TYPES = {"us_passport", "us_driver_license", "date_of_birth"}


class PiiConfig(MaskedConfig):
    name: ClassVar[str] = "pii"
    action: Action = Field("redact", description="redact (default) masks each value; block or monitor")
    types: list[PiiType] = Field(
        default_factory=lambda: list(DEFAULT_TYPES),  # type: ignore[arg-type]
        min_length=1,
        description="PII types to find (street_address is opt-in: precise but incomplete)",
    )
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="report matches scoring at least this")


class Pii:
    def __init__(self, config: PiiConfig) -> None:
        self.config = config
        self._types = tuple(dict.fromkeys(config.types))
        self._masker = masker_for(config)
        self._hold = pii_hold(self._types)

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c = self.config
        return masked_findings(
            c, self._masker, conversation, context,
            detect=lambda text: detect_pii(text, self._types, c.min_score),
            layer=lambda kind: "context" if kind in _CONTEXT_TYPES else "validator",
            threshold=c.min_score,
        )

    def hold(self, segment: Segment, context: CheckContext) -> int:
        return self._hold.hold(segment.text) if in_scope(segment, self.config.sources) else len(segment.text)
