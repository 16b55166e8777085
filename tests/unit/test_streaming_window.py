"""The hold-back window and ResponseStream: no cross-chunk bypass, every ending clean."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re

import pytest

from irl_extproc.codecs.base import apply_redactions
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Conversation, Segment, Usage
from irl_extproc.engine import CompiledRoute, evaluate
from irl_extproc.invariants.base import CheckContext
from irl_extproc.streaming.registry import STREAM_CODECS
from irl_extproc.streaming.stream import USAGE_STATE_KEY, ResponseStream
from tests.unit.streaming_helpers import (
    API_FORMATS,
    Driven,
    client_text,
    compile_route,
    cut,
    drive,
    events,
    open_stream,
    provider_stream,
    random_chunks,
)

pytestmark = pytest.mark.unit

VALUES = [
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
]
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "streaming",
    "tokens",
    "arrive",
    "one",
    "by",
    "one",
]
ROUTE = compile_route()


def buffered_result(route: CompiledRoute, text: str) -> str:
    """What the same invariants make of the whole text at once (the non-streamed path)."""
    conversation = Conversation("response", "x", {"t": text}, [Segment("assistant", text, ("t",))])
    decision = evaluate(route.response, conversation, CheckContext("svc/r"), "enforce")
    apply_redactions(conversation, decision.redactions)
    return conversation.segments[0].text


def filler(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


@pytest.mark.parametrize("api_format", API_FORMATS)
async def test_property_values_split_anywhere_never_reach_the_client(api_format: str) -> None:
    for seed in range(12):
        rng = random.Random(seed)
        values = rng.sample(VALUES, rng.randint(1, 2))
        text = filler(rng, rng.randint(0, 30))
        cuts = []
        for value in values:
            start = len(text) + 1
            text += " " + value + " " + filler(rng, rng.randint(1, 20))
            cuts += [start + c for c in rng.sample(range(1, len(value)), rng.randint(1, 4))]  # 2-5 pieces
        cuts += rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 10)))
        body = provider_stream(api_format, cut(text, cuts))
        _, driven = await drive(ROUTE, api_format, random_chunks(body, rng))
        for value in values:
            assert value.encode() not in driven.body, (seed, value)
        assert client_text(api_format, driven.body) == buffered_result(ROUTE, text), seed
        assert driven.ended
        assert not driven.faults


EVERY_DETECTOR = """
            - pii: {types: [email, phone, credit_card, iban, us_ssn, ip_address, mac_address, us_passport,
                            us_driver_license, date_of_birth, street_address], action: redact}
            - secrets: {action: redact}
            - deny_patterns: {patterns: ['(?i)project\\s+blue(?:bird|jay)', 'CANARY-[0-9a-f]{12}'], action: redact}
            - links: {allowed_domains: [example.org], action: redact}
            - canary: {action: redact, inject: false}
"""
TOKEN = "irl-0123456789abcdef"
SENSITIVE = [
    "jane.doe@example.com",
    "+1 415 555 2671",
    "call 415-555-2671",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "SSN 123-45-6789",
    "123456789 is my ssn",
    "192.168.10.20",
    "00:1A:2B:3C:4D:5E",
    "passport X12345678",
    "driver license D1234567",
    "born on 12/05/1990",
    "1600 Pennsylvania Avenue",
    "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
    "AKIAIOSFODNN7EXAMPLE",
    "password: Zx9qT4mB7wK2pL",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----",
    "project  Bluejay",
    "CANARY-0123456789ab",
    "https://evil.example.com/login",
    TOKEN,
]


def whole_result(route: CompiledRoute, text: str, context: CheckContext) -> str:
    """What the same invariants make of the whole text at once (the non-streamed path)."""
    conversation = Conversation("response", "x", {"t": text}, [Segment("assistant", text, ("t",))])
    decision = evaluate(route.response, conversation, context, "enforce")
    apply_redactions(conversation, decision.redactions)
    return conversation.segments[0].text


async def test_property_every_detector_changes_a_stream_as_it_changes_the_whole_text() -> None:
    route = compile_route(response=EVERY_DETECTOR)
    for seed in range(40):
        rng = random.Random(seed)
        text = filler(rng, rng.choice([0, 0, 1, 5]))  # values right at the start of the stream too
        cuts = []
        for value in rng.sample(SENSITIVE, rng.randint(1, 3)):
            start = len(text) + (1 if text else 0)
            text += (" " if text else "") + value + " " + filler(rng, rng.randint(0, 6))
            cuts += [start + c for c in rng.sample(range(1, len(value)), min(len(value) - 1, rng.randint(1, 4)))]
        cuts += rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 8)))
        body = provider_stream("openai-chat", cut(text, cuts))
        context = CheckContext("svc/r", state={"canary": TOKEN})
        _, driven = await drive(route, "openai-chat", random_chunks(body, rng), context)
        expected = whole_result(route, text, CheckContext("svc/r", state={"canary": TOKEN}))
        # Placeholder numbers may rarely differ: a value a later check sees as part of a longer one.
        sent = re.sub(r"_\d+\]", "_n]", client_text("openai-chat", driven.body))
        assert sent == re.sub(r"_\d+\]", "_n]", expected), (seed, text, cuts)


@pytest.mark.parametrize("api_format", API_FORMATS)
async def test_a_block_mid_stream_ends_with_the_provider_error_event(api_format: str) -> None:
    text = "Sure. " + "x " * 100 + "the canary is CANARY-0123456789ab and more text follows " + "y " * 50
    body = provider_stream(api_format, cut(text, [220, 228, 235]))
    stream, driven = await drive(ROUTE, api_format, random_chunks(body, random.Random(1)))
    assert b"CANARY" not in driven.body
    assert b"0123456789ab" not in driven.body
    assert text.startswith(client_text(api_format, driven.body))
    name, data = events(driven.body)[-1]
    assert "deny_patterns" in data
    assert name == {"openai-chat": None, "openai-responses": "error", "anthropic-messages": "error"}[api_format]
    assert driven.ended
    assert stream.done
    assert "deny_patterns[0]" in driven.rules
    sent = len(driven.replies)
    assert await stream.feed(b"data: {}\n\n", end_of_stream=True) is None  # what still comes is dropped
    assert len(driven.replies) == sent


async def feed_events(stream: ResponseStream, driven: Driven, pieces: list[str]) -> list[str]:
    """Feed the head and one delta event per piece; what the client has after each piece."""
    head, *deltas = provider_stream("openai-chat", pieces, usage=False).split(b"\n\n")[: len(pieces) + 1]
    await stream.feed(head + b"\n\n", end_of_stream=False)
    seen = []
    for delta in deltas:
        await stream.feed(delta + b"\n\n", end_of_stream=False)
        seen.append(client_text("openai-chat", driven.body))
    return seen


async def test_text_goes_out_as_soon_as_no_invariant_could_still_change_it() -> None:
    stream, driven = open_stream(ROUTE, "openai-chat")
    pieces = ["The ", "pressure ", "held ", "steady"]
    seen = await feed_events(stream, driven, pieces)
    # Each event as it arrives; the last word waits: it could still grow into an address or a key.
    assert seen == ["The ", "The pressure ", "The pressure held ", "The pressure held "]
    stream.close()


@pytest.mark.parametrize(
    ("pieces", "held_from"),
    [
        (["mail ", "ja", "ne.doe@exa", "mple.com", " today"], 1),  # an e-mail address from its first letter
        (["card 4", "111 11", "11 1111 11", "11 now"], 0),
        (["the code is CA", "NARY-0123", "4567"], 0),  # a deny pattern's prefix
        (["key: ghp", "_aB3dE5fG7hJ9kL1mN3pQ5", "rS7tU9vW1xY3zA5 ok"], 0),
    ],
)
async def test_a_value_still_arriving_is_held_from_its_first_character(pieces: list[str], held_from: int) -> None:
    stream, driven = open_stream(ROUTE, "openai-chat")
    seen = await feed_events(stream, driven, pieces)
    first_piece = pieces[0].rsplit(" ", 1)[0] + " "
    assert all(s == (first_piece if held_from else "") for s in seen[held_from:-1]), seen
    stream.close()


async def test_a_value_masked_while_still_arriving_takes_its_number_only_once() -> None:
    pieces = ["mail jane.doe@example.co", "m or jane.doe@example.com or john@", "example.org now"]
    _, driven = await drive(ROUTE, "openai-chat", [provider_stream("openai-chat", pieces)])
    assert client_text("openai-chat", driven.body) == "mail [EMAIL_1] or [EMAIL_1] or [EMAIL_2] now"


async def test_a_reply_copying_the_system_prompt_is_held_until_the_overlap_blocks_it() -> None:
    route = compile_route(response="            - canary: {inject: false, max_overlap: 0.5}")
    system = "You are the support bot of Acme. Never reveal the discount codes or the refund rules."
    context = CheckContext("svc/r")
    context.request = OpenAIChat().decode_request(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]}
    )
    words = ["Sure! ", "Here ", "goes: "] + [w + " " for w in system.split()]
    stream, driven = open_stream(route, "openai-chat", context)
    seen = await feed_events(stream, driven, words)
    assert seen[2] == "Sure! Here goes: "  # text that copies nothing goes out at once
    assert all(s == "Sure! Here goes: " for s in seen[3:])  # the copy never reached the client
    assert "canary" in events(driven.body)[-1][1]
    assert driven.ended


async def test_the_window_bounds_how_much_is_held() -> None:
    route = compile_route("          stream_window_chars: 40\n          stream_window_time: 0s")
    stream, driven = open_stream(route, "openai-chat")
    pieces = ["x" * 7] * 30  # one growing run that could still be a key: held, but at most 40 characters
    await feed_events(stream, driven, pieces)
    received = 7 * 30
    assert received - 40 - 7 <= len(client_text("openai-chat", driven.body)) <= received - 40
    await stream.feed(b"", end_of_stream=True)
    assert client_text("openai-chat", driven.body) == "x" * received


async def test_the_time_bound_releases_only_text_that_waited_long_enough() -> None:
    route = compile_route("          stream_window_time: 60ms")
    stream, driven = open_stream(route, "openai-chat")
    events_bytes = provider_stream("openai-chat", ["Call ", "4111 1111 ", "1111 11"]).split(b"\n\n")
    await stream.feed(b"\n\n".join(events_bytes[:3]) + b"\n\n", end_of_stream=False)  # head + 2 deltas
    assert client_text("openai-chat", driven.body) == "Call "  # a number that may still become a card: held
    await asyncio.sleep(0.03)
    await stream.feed(events_bytes[3] + b"\n\n", end_of_stream=False)  # more of it
    assert client_text("openai-chat", driven.body) == "Call "
    for _ in range(50):  # wait for the timer's send (at most ~100 ms), never a fixed sleep
        if client_text("openai-chat", driven.body) != "Call ":
            break
        await asyncio.sleep(0.01)
    assert client_text("openai-chat", driven.body) == "Call 4111 1111 "  # the fresh part stays held
    stream.close()


async def test_reversible_placeholders_are_restored_even_when_split() -> None:
    request = "            - pii: {types: [email], action: redact, restore: true}"
    route = compile_route(request=request)
    context = CheckContext("svc/r")
    prompt = OpenAIChat().decode_request({"messages": [{"role": "user", "content": "mail jane.doe@example.com"}]})
    [finding] = route.request[0].impl.check(prompt, context)
    assert finding.replacement == "[EMAIL_1]"
    text = "I will write to [EMAIL_1] today, and to [EMAIL_9] never."
    for cuts in ([17], [16, 20, 24], [19, 40, 44]):
        _, driven = await drive(
            route, "anthropic-messages", [provider_stream("anthropic-messages", cut(text, cuts))], context
        )
        assert client_text("anthropic-messages", driven.body) == (
            "I will write to jane.doe@example.com today, and to [EMAIL_9] never."
        )


SCHEMA = "            - json_schema: {schema: {type: object, required: [ok]}}"


@pytest.mark.parametrize(("text", "valid"), [('{"ok": true, "n": 12345678}', True), ('{"nope": 1}', False)])
async def test_whole_response_buffer_sends_nothing_before_the_end(text: str, valid: bool) -> None:
    route = compile_route(response=SCHEMA)
    stream, driven = open_stream(route, "openai-chat")
    body = provider_stream("openai-chat", cut(text, [3, 8, 15]))
    events_bytes = [e + b"\n\n" for e in body.split(b"\n\n")[:-1]]
    for event_bytes in events_bytes[:-1]:  # everything but [DONE]
        await stream.feed(event_bytes, end_of_stream=False)
    assert client_text("openai-chat", driven.body) == ""
    await stream.feed(events_bytes[-1], end_of_stream=True)
    assert client_text("openai-chat", driven.body) == (text if valid else "")
    assert (events(driven.body)[-1][1] == "[DONE]") is valid
    assert driven.ended


@pytest.mark.parametrize(("text", "valid"), [('{"ok": 1}', True), ('{"nope": 1}', False)])
async def test_whole_response_append_error_streams_then_replaces_the_last_event(text: str, valid: bool) -> None:
    route = compile_route(
        "          stream_whole_response: append_error\n          stream_window_chars: 4", response=SCHEMA
    )
    body = provider_stream("openai-chat", cut(text, [3, 6]))
    _, driven = await drive(route, "openai-chat", [body])
    assert client_text("openai-chat", driven.body) == text
    last = events(driven.body)[-1][1]
    assert (last == "[DONE]") is valid
    assert valid or "irl_json_schema" in last


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open"])
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"id": "x", "choices": [{"message": {"content": "mail jane.doe@example.com"}}]}', "irl_stream_not_sse"),
        (b'data: {"choices": [{"delta": {"content": "' + b"z" * 3000 + b'"}}]}\n\n', "irl_stream_event_too_long"),
        (
            b'data: {"choices": [{"delta": {"content": "to jane.doe@example.com"}}]}\n\ndata: {"cho',
            "irl_stream_truncated",
        ),
        (b"data: not json\n\n", "irl_stream_unreadable"),
    ],
)
async def test_faults_end_cleanly_with_the_fail_behaviour(body: bytes, code: str, on_error: str) -> None:
    route = compile_route(f"          on_error: {on_error}\n          max_body_bytes: 2KiB")
    _, driven = await drive(route, "openai-chat", [body[:40], body[40:]])
    assert driven.faults == [(code, on_error == "fail_open")]
    assert driven.ended
    if on_error == "fail_open" and code == "irl_stream_truncated":  # checked text redacted, the rest as it came
        assert client_text("openai-chat", driven.body[: -len(b'data: {"cho')]) == "to [EMAIL_1]"
        assert driven.body.endswith(b'\n\ndata: {"cho')
    elif on_error == "fail_open":
        assert driven.body == body  # unchecked but whole, and flagged
    else:  # what was checked goes out (redacted), then the provider's error event
        assert b"jane.doe" not in driven.body
        assert b"zzz" not in driven.body
        assert client_text("openai-chat", driven.body) in ("", "to [EMAIL_1]")
        assert code in events(driven.body)[-1][1]


async def test_a_stream_over_the_size_limit_while_buffering_is_refused() -> None:
    route = compile_route("          max_body_bytes: 1KiB", response=SCHEMA)
    body = provider_stream("openai-chat", ["x" * 100] * 20)
    _, driven = await drive(route, "openai-chat", [body])
    assert driven.faults == [("irl_body_too_large", False)]
    assert client_text("openai-chat", driven.body) == ""


@pytest.mark.parametrize("api_format", API_FORMATS)
async def test_usage_is_captured_for_budgets(api_format: str) -> None:
    context = CheckContext("svc/r")
    stream, _ = await drive(ROUTE, api_format, [provider_stream(api_format, ["a", "b"])], context)
    assert stream.usage == Usage(7, 11)
    assert stream.conversation.usage == Usage(7, 11)
    assert context.state[USAGE_STATE_KEY] == Usage(7, 11)


async def test_buffered_mode_answers_once_with_the_whole_rewritten_body() -> None:
    driven = Driven()
    stream = ResponseStream(
        ROUTE, STREAM_CODECS["openai-chat"](), CheckContext("svc/r"), driven.hooks(), full_duplex=False
    )
    reply = await stream.feed(provider_stream("openai-chat", ["mail jane.", "doe@example.com"]), end_of_stream=True)
    assert reply is not None
    assert not driven.replies
    body = reply.response_body.response.body_mutation.body
    assert client_text("openai-chat", body) == "mail [EMAIL_1]"
    [length] = [h.header.raw_value for h in reply.response_body.response.header_mutation.set_headers]
    assert int(length) == len(body)


async def test_a_body_ending_with_trailers_leaves_the_end_to_the_trailers_reply() -> None:
    stream, driven = open_stream(ROUTE, "openai-chat")
    await stream.feed(provider_stream("openai-chat", ["hello"]), end_of_stream=False)
    await stream.feed(b"", end_of_stream=True, trailers=True)
    assert client_text("openai-chat", driven.body) == "hello"
    assert not any(r.response_body.response.body_mutation.streamed_response.end_of_stream for r in driven.replies)


async def test_monitor_mode_records_and_changes_nothing() -> None:
    route = compile_route("          mode: monitor")
    text = "mail jane.doe@example.com and CANARY-0123456789ab"
    body = provider_stream("openai-chat", cut(text, [10, 40]))
    _, driven = await drive(route, "openai-chat", [body])
    assert driven.body == body
    assert {"pii.email", "deny_patterns[0]"} <= driven.rules
    assert not any(d.enforced for d in driven.decisions)


async def test_a_gzip_stream_is_inspected_decoded() -> None:
    body = provider_stream("openai-chat", ["mail jane.", "doe@example.com"])
    packed = gzip.compress(body)
    driven = Driven()
    stream = ResponseStream(
        ROUTE, STREAM_CODECS["openai-chat"](), CheckContext("svc/r"), driven.hooks(), encoding="gzip"
    )
    for i in range(0, len(packed), 17):
        await stream.feed(packed[i : i + 17], end_of_stream=False)
    await stream.feed(b"", end_of_stream=True)
    assert client_text("openai-chat", driven.body) == "mail [EMAIL_1]"


async def test_a_must_match_pattern_is_judged_on_the_whole_stream() -> None:
    route = compile_route(response="            - patterns: {must_match: ['(?i)sources?:']}")
    ok = provider_stream("openai-chat", cut("The answer is 42. " * 20 + "Sources: the book.", [100, 200]))
    _, driven = await drive(route, "openai-chat", [ok])
    assert client_text("openai-chat", driven.body).endswith("Sources: the book.")
    missing = provider_stream("openai-chat", cut("The answer is 42. " * 20, [100, 200]))
    _, driven = await drive(route, "openai-chat", [missing])
    assert client_text("openai-chat", driven.body) == ""  # buffered, then refused whole
    assert "irl_patterns" in events(driven.body)[-1][1]


async def test_tool_call_arguments_split_across_deltas_are_redacted() -> None:
    arguments = ['{"to": "jane.d', "oe@exam", 'ple.com", "body": "hi"}']
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "type": "function", "function": {"name": "send", "arguments": ""}}
                        ]
                    },
                }
            ]
        },
        *[
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]}
            for a in arguments
        ],
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    _, driven = await drive(ROUTE, "openai-chat", [body])
    assert b"jane.doe" not in driven.body
    sent = "".join(
        call["function"].get("arguments", "")
        for _, data in events(driven.body)
        if data != "[DONE]"
        for choice in json.loads(data)["choices"]
        for call in choice["delta"].get("tool_calls", [])
    )
    assert json.loads(sent) == {"to": "[EMAIL_1]", "body": "hi"}
