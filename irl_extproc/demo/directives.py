"""The ``x-demo-*`` request headers that steer the demo upstream (documented in ``upstream``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, get_args
from urllib.parse import unquote

Fault = Literal["reset", "close-mid-stream", "not-sse", "long-event"]
FAULTS: tuple[str, ...] = get_args(Fault)
MAX_DELAY_MS = 600_000
MAX_EVENT_BYTES = 64 * 1024 * 1024
DEFAULT_EVENT_BYTES = 1024 * 1024


class DirectiveError(ValueError):
    """A malformed ``x-demo-*`` header; the message names the header and the fix."""


@dataclass(frozen=True, slots=True)
class Directives:
    reply: str | None = None
    chunks: int | None = None
    seed: int = 0
    split_at: tuple[int, ...] = ()
    chunk_delay_ms: int = 0
    # Faults; with fault_key they apply only to the first fault_times requests with that key.
    delay_ms: int = 0
    status: int | None = None
    fault: Fault | None = None
    close_after: int | None = None
    event_bytes: int = DEFAULT_EVENT_BYTES
    fault_key: str | None = None
    fault_times: int | None = None

    @property
    def has_fault(self) -> bool:
        return bool(self.delay_ms) or self.status is not None or self.fault is not None

    def without_faults(self) -> Directives:
        return Directives(self.reply, self.chunks, self.seed, self.split_at, self.chunk_delay_ms)


def _int(headers: dict[str, str], name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise DirectiveError(f"header {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise DirectiveError(f"header {name} must be between {low} and {high}, got {value}")
    return value


def _offsets(raw: str) -> tuple[int, ...]:
    try:
        offsets = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise DirectiveError(f"header x-demo-split must be comma-separated offsets, got {raw!r}") from None
    if any(offset < 0 for offset in offsets):
        raise DirectiveError("header x-demo-split offsets must not be negative")
    return tuple(offsets)


def parse_directives(headers: dict[str, str]) -> Directives:
    """Read the ``x-demo-*`` headers. Absent headers keep the defaults (plain echo, no fault)."""
    if not any(name.startswith("x-demo-") for name in headers):
        return _NONE
    fault = headers.get("x-demo-fault")
    if fault is not None and fault not in FAULTS:
        raise DirectiveError(f"header x-demo-fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    reply = headers.get("x-demo-reply")
    return Directives(
        reply=unquote(reply, errors="strict") if reply is not None else None,
        chunks=_int(headers, "x-demo-chunks", 1, 100_000),
        seed=_int(headers, "x-demo-seed", 0, 2**63) or 0,
        split_at=_offsets(headers["x-demo-split"]) if "x-demo-split" in headers else (),
        chunk_delay_ms=_int(headers, "x-demo-chunk-delay-ms", 0, MAX_DELAY_MS) or 0,
        delay_ms=_int(headers, "x-demo-delay-ms", 0, MAX_DELAY_MS) or 0,
        status=_int(headers, "x-demo-status", 400, 599),
        fault=fault,  # type: ignore[arg-type]  # checked against FAULTS above
        close_after=_int(headers, "x-demo-close-after", 0, 100_000),
        event_bytes=_int(headers, "x-demo-event-bytes", 1, MAX_EVENT_BYTES) or DEFAULT_EVENT_BYTES,
        fault_key=headers.get("x-demo-fault-key"),
        fault_times=_int(headers, "x-demo-fault-times", 0, 1_000_000),
    )


_NONE = Directives()


def split_reply(text: str, directives: Directives) -> list[str]:
    """The streamed pieces of ``text``: at explicit offsets, at seeded random offsets, or per word."""
    if directives.split_at:
        cuts = [c for c in directives.split_at if 0 < c < len(text)]
    elif directives.chunks is not None:
        count = min(directives.chunks, len(text)) - 1
        rng = random.Random(directives.seed)  # noqa: S311  # reproducible test data, not secrecy
        cuts = sorted(rng.sample(range(1, len(text)), count)) if count > 0 else []
    else:
        cuts = [i + 1 for i, char in enumerate(text[:-1]) if char == " "]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)] or [""]
