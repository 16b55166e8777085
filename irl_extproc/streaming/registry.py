"""Stream codecs by API format name (a fresh codec per stream: codecs keep a little state)."""

from __future__ import annotations

from collections.abc import Callable

from irl_extproc.streaming.anthropic_messages import AnthropicMessagesStream
from irl_extproc.streaming.events import StreamCodec
from irl_extproc.streaming.openai_chat import OpenAIChatStream
from irl_extproc.streaming.openai_responses import OpenAIResponsesStream

STREAM_CODECS: dict[str, Callable[[], StreamCodec]] = {
    "openai-chat": OpenAIChatStream,
    "openai-responses": OpenAIResponsesStream,
    "anthropic-messages": AnthropicMessagesStream,
}
