"""Codecs by API format name, and the format a path implies."""

from __future__ import annotations

from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.base import Codec
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.codecs.openai_responses import OpenAIResponses

CODECS: dict[str, Codec] = {c.name: c for c in (OpenAIChat(), AnthropicMessages(), OpenAIResponses())}

_PATH_SUFFIXES = {
    "/chat/completions": "openai-chat",
    "/messages": "anthropic-messages",
    "/responses": "openai-responses",
}


def resolve_format(api_format: str, path: str) -> str:
    """The route's API format; for ``auto``, the one the request path names ("": unknown)."""
    if api_format == "auto":
        clean = path.split("?", 1)[0].rstrip("/")
        return next((f for suffix, f in _PATH_SUFFIXES.items() if clean.endswith(suffix)), "")
    return api_format


def codec_for(api_format: str, path: str) -> Codec | None:
    """The route's codec; for ``auto``, the one the request path names (None: unknown API)."""
    return CODECS.get(resolve_format(api_format, path))
