"""What a codec is, plus the format-independent parts: JSON parsing, write-back, encoding."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Protocol

from irl_extproc.conversation import Conversation, JsonPath, Segment, Usage
from irl_extproc.invariants.base import Finding


class CodecError(ValueError):
    """A body the codec cannot read. The message is safe to show: it never quotes content."""


class Codec(Protocol):
    name: str

    def decode_request(self, body: Any) -> Conversation: ...

    def decode_response(self, body: Any) -> Conversation: ...

    def error_body(self, status: int, message: str, code: str) -> dict[str, Any]:
        """The provider's own error shape, so SDKs raise their normal error type."""
        ...


# JSON can escape half a UTF-16 surrogate pair ("\ud800"); Python decodes it into a string that
# cannot be encoded as UTF-8 again (not by the detectors' RE2, not when a redacted body is written).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class UnpairedSurrogate(ValueError):
    pass


def loads_unicode(text: str) -> Any:
    """``json.loads`` that refuses strings which are not Unicode (unpaired surrogate escapes)."""
    document = json.loads(text)
    if _SURROGATE_ESCAPE.search(text):  # rare: escaped pairs (emoji) land here too, and pass
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UnpairedSurrogate("an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)") from None
    return document


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise CodecError("body is empty")
    try:
        return loads_unicode(text)
    except json.JSONDecodeError as exc:
        raise CodecError(f"body is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except UnpairedSurrogate as exc:
        raise CodecError(f"body has {exc}") from None
    except RecursionError:
        raise CodecError("body JSON is nested too deeply") from None


def encode_json(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CodecError(message)


def as_dict(value: Any, message: str) -> dict[str, Any]:
    require(isinstance(value, dict), message)
    return value  # type: ignore[no-any-return]


def as_list(value: Any, message: str) -> list[Any]:
    require(isinstance(value, list), message)
    return value  # type: ignore[no-any-return]


def _model(body: dict[str, Any]) -> str | None:
    return body.get("model") if isinstance(body.get("model"), str) else None


def request_conversation(
    api_format: str, body: dict[str, Any], segments: list[Segment], max_tokens: Any
) -> Conversation:
    """The request-side fields every API shares (model, max tokens, stream)."""
    return Conversation(
        direction="request",
        api_format=api_format,
        body=body,
        segments=segments,
        model=_model(body),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        stream=body.get("stream") is True,
    )


def response_conversation(
    api_format: str, body: dict[str, Any], segments: list[Segment], usage_keys: tuple[str, str]
) -> Conversation:
    """The response-side fields every API shares; ``usage_keys`` name input and output tokens."""
    usage = body.get("usage")
    return Conversation(
        direction="response",
        api_format=api_format,
        body=body,
        segments=segments,
        model=_model(body),
        usage=Usage(usage.get(usage_keys[0]), usage.get(usage_keys[1])) if isinstance(usage, dict) else None,
    )


def set_at(body: Any, path: JsonPath, value: str) -> None:
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _non_overlapping(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the earliest (then longest) span where redactions overlap."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start or 0, -(f.end or 0))):
        if not kept or (f.start or 0) >= (kept[-1].end or 0):
            kept.append(f)
    return kept


def apply_redactions(conversation: Conversation, findings: Iterable[Finding]) -> int:
    """Write each redaction's replacement into its segment and the body. Returns the count."""
    by_segment: dict[int, list[Finding]] = {}
    for f in findings:
        if f.segment is not None and f.start is not None and f.end is not None and f.replacement is not None:
            by_segment.setdefault(f.segment, []).append(f)
    applied = 0
    for index, segment_findings in by_segment.items():
        segment = conversation.segments[index]
        text = segment.text
        for f in reversed(_non_overlapping(segment_findings)):
            text = text[: f.start] + (f.replacement or "") + text[f.end :]
            applied += 1
        segment.text = text
        set_at(conversation.body, segment.path, text)
    return applied
