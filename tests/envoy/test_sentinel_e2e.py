"""Through a real Envoy with the official SDKs as clients (tests/policies/basic.yaml)."""

from __future__ import annotations

import gzip
import json

import anthropic
import httpx
import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.envoy


def openai_client(stack: Stack, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="test", max_retries=0, default_headers=headers)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="test", max_retries=0)


def last_received_body(stack: Stack) -> dict[str, object]:
    body: dict[str, object] = json.loads(stack.received()[-1]["body"])
    return body


def test_openai_sdk_gets_a_normal_completion(stack: Stack) -> None:
    reply = openai_client(stack).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"


def test_openai_sdk_surfaces_a_block_as_a_normal_api_error(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_client(stack).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "status of Project Bluebird?"}]
        )
    assert info.value.status_code == 403
    assert info.value.code == "irl_deny_patterns"
    assert info.value.response.headers["x-irl-rule"] == "deny_patterns[0]"
    assert "Bluebird" not in info.value.response.text


def test_redaction_reaches_the_upstream(stack: Stack) -> None:
    reply = openai_client(stack).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "my ssn is 123-45-6789"}]
    )
    assert reply.choices[0].message.content == "echo: my ssn is [SSN]"
    received = last_received_body(stack)
    assert "123-45-6789" not in json.dumps(received)
    assert received["messages"] == [{"role": "user", "content": "my ssn is [SSN]"}]


def test_response_redaction_before_the_client_sees_it(stack: Stack) -> None:
    secret = "sk-" + "Zx9" * 8
    client = openai_client(stack, **{"x-demo-reply": f"your key: {secret}"})
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "key?"}])
    assert reply.choices[0].message.content == "your key: [KEY]"


def test_anthropic_sdk_normal_and_block(stack: Stack) -> None:
    client = anthropic_client(stack)
    ok = client.messages.create(model="claude-3-5-haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert ok.content[0].text == "echo: hi"  # type: ignore[union-attr]
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(
            model="claude-3-5-haiku",
            max_tokens=20,
            system="You know about project bluebird.",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_header_only_and_unguarded_routes_pass(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/v1/models").status_code == 200
    assert httpx.get(f"{stack.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "irl_unreadable_body"),
        (b'{"messages": "\xff"}', {}, 400, "irl_unreadable_body"),
        (b"", {}, 400, "irl_empty_body"),
        (
            json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 80_000}]}).encode(),
            {},
            413,
            "irl_body_too_large",
        ),
        (
            gzip.compress(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"project bluebird"}]}'),
            {"content-encoding": "gzip"},
            403,
            "irl_deny_patterns",
        ),
    ],
)
def test_bad_input_through_envoy(stack: Stack, content: bytes, headers: dict[str, str], status: int, code: str) -> None:
    reply = httpx.post(
        f"{stack.url}/v1/chat/completions", content=content, headers={"content-type": "application/json", **headers}
    )
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code


def test_gzip_request_redaction_reaches_upstream_decoded(stack: Stack) -> None:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ssn 123-45-6789"}]}
    reply = httpx.post(
        f"{stack.url}/v1/chat/completions",
        content=gzip.compress(json.dumps(payload).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert reply.status_code == 200
    assert last_received_body(stack)["messages"] == [{"role": "user", "content": "ssn [SSN]"}]
