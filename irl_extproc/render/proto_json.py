"""Small builders for Envoy's proto-JSON: typed ``Any`` payloads."""

from __future__ import annotations

from typing import Any


def typed(message: str, **fields: Any) -> dict[str, Any]:
    """An ``Any`` of the fully qualified proto ``message`` with ``fields``."""
    return {"@type": f"type.googleapis.com/{message}", **fields}
