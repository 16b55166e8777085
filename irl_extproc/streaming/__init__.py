"""Streaming enforcement: SSE responses inspected and rewritten in flight.

``sse`` parses the byte stream into events; a stream codec per provider API
(``openai_chat``, ``openai_responses``, ``anthropic_messages``) reads each event's text
deltas and writes the provider's error event; ``window`` holds text back until no
response invariant can still change it; ``stream`` runs one response through all of it
for the ext_proc processor. See docs/streaming.md.
"""
