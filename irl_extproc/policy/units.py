"""Durations and sizes written the way people write them (``500ms``, ``2s``, ``1MiB``)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"2s"``, ``"1.5m"``, ``"1h"`` (bare numbers are refused)."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; write it like '250ms', '2s', '1.5m' or '1h'")


def format_duration(seconds: float) -> str:
    """Envoy proto-JSON duration: ``0.5s``."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        return int(match.group(1)) * _SIZE_BYTES[match.group(2)]
    raise ValueError(f"{value!r} is not a size; write bytes as a number or like '64KiB' or '1MiB'")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["250ms", "2s"]}),
]
"""Seconds; written in policies as '250ms' / '2s'."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _SIZE.pattern}]}),
]
