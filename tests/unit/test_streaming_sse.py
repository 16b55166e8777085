"""The incremental SSE parser: any split of the bytes gives the same events, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irl_extproc.streaming.sse import EventTooLong, NotEventStream, SseEvent, SseParser, encode_event

pytestmark = pytest.mark.unit

STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b": keep-alive\n\n"
    b"data: line one\ndata: line two\n\n"
    b"id: 7\nretry: 1000\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)


def parse_all(chunks: list[bytes], limit: int = 1 << 20) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser(limit)
    out = [e for chunk in chunks for e in parser.feed(chunk)]
    out += parser.feed(b"", final=True)
    return out, parser


def test_events_fields_and_exact_bytes() -> None:
    events, parser = parse_all([STREAM])
    assert [(e.event, e.data) for e in events] == [
        ("message_start", '{"a": 1}'),
        (None, None),  # a comment-only block: forwarded, carries nothing
        (None, "line one\nline two"),
        (None, "no-space"),
        (None, "[DONE]"),
    ]
    assert b"".join(e.raw for e in events) == STREAM
    assert not parser.cut_off


def test_every_split_point_gives_the_same_events() -> None:
    whole, _ = parse_all([STREAM])
    for cut in range(1, len(STREAM)):
        split, _ = parse_all([STREAM[:cut], STREAM[cut:]])
        assert split == whole, cut
    one_byte_at_a_time, _ = parse_all([bytes([b]) for b in STREAM])
    assert one_byte_at_a_time == whole


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_crlf_cr_and_lf_line_endings(newline: bytes) -> None:
    body = b"event: x" + newline + b"data: 1" + newline + newline + b"data: 2" + newline + newline
    for cut in range(1, len(body)):  # a CR at the end of a write may be half of a CRLF
        events, parser = parse_all([body[:cut], body[cut:]])
        assert [(e.event, e.data) for e in events] == [("x", "1"), (None, "2")], cut
        assert b"".join(e.raw for e in events) == body
        assert not parser.cut_off


def test_a_cut_off_event_is_reported_and_kept_pending() -> None:
    events, parser = parse_all([b'data: 1\n\ndata: {"partial'])
    assert [e.data for e in events] == ["1"]
    assert parser.cut_off
    assert parser.pending == b'data: {"partial'


@pytest.mark.parametrize("body", [b'{"id": "chatcmpl-1", "choices": []}\n', b"<html>\n", b"hello: world\n\n"])
def test_a_body_that_is_not_an_event_stream_is_refused(body: bytes) -> None:
    with pytest.raises(NotEventStream):
        parse_all([body])


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(NotEventStream):
        parse_all([b"data: \xff\xfe\n\n"])


def test_an_event_longer_than_the_limit_is_refused_before_it_ends() -> None:
    parser = SseParser(100)
    assert parser.feed(b"data: " + b"x" * 80 + b"\n\n")  # under the limit: fine
    parser.feed(b"data: " + b"y" * 60)
    with pytest.raises(EventTooLong):
        parser.feed(b"y" * 60)


def test_encode_event_frames_like_the_providers() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event(b"{}", "error") == b"event: error\ndata: {}\n\n"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "delta", "ping"]),
            st.text(st.characters(codec="utf-8", exclude_characters="\r\n")),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
)
def test_property_any_events_any_split(source: list[tuple[str | None, str]], newline: bytes, sizes: list[int]) -> None:
    body = b"".join(
        (f"event: {name}".encode() + newline if name else b"") + b"data: " + data.encode() + newline + newline
        for name, data in source
    )
    chunks, position = [], 0
    for size in sizes * (len(body) // max(1, sum(sizes)) + 1):
        if position >= len(body):
            break
        chunks.append(body[position : position + size])
        position += size
    events, parser = parse_all(chunks)
    assert [(e.event, e.data) for e in events] == source
    assert b"".join(e.raw for e in events) == body
    assert not parser.cut_off
