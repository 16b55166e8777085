"""Body accumulation with a size limit, and content-encoding decoding."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


class BodyTooLarge(Exception):
    pass


class UndecodableBody(Exception):
    """Safe to show: names the encoding, never the content."""


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
DECODABLE = frozenset(_WBITS) | {"", "identity"}


@dataclass(slots=True)
class BodyBuffer:
    limit: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    ended: bool = False

    def add(self, chunk: bytes, *, end_of_stream: bool) -> None:
        # Kept even when over the limit: fail_open must still forward every held byte.
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.ended = end_of_stream
        if self.size > self.limit:
            raise BodyTooLarge

    def data(self) -> bytes:
        if len(self.chunks) > 1:
            self.chunks[:] = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""


def decode_content(data: bytes, encoding: str, limit: int) -> bytes:
    """Inflate gzip/deflate without ever holding more than ``limit`` bytes (zip bombs)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in _WBITS:
        raise UndecodableBody(f"content-encoding {encoding!r} is not supported (gzip, deflate or identity)")
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise UndecodableBody(f"body is not valid {encoding}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise UndecodableBody(f"{encoding} body is truncated")
    return out
