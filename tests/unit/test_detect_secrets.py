"""Secrets: provider formats found, placeholders and identifiers ignored."""

from __future__ import annotations

import pytest

from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.base import apply_redactions
from irl_extproc.detect.secrets import detect_secrets, looks_random
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.secrets import Secrets, SecretsConfig

pytestmark = pytest.mark.unit

# Test-only values built at run time in the documented formats; none is a real credential.
STRIPE = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GITHUB = "ghp_" + "wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx"


@pytest.mark.parametrize(("text", "kind"), [
    ("key AKIA" + "Q3EGUMVHZ7OPXY2T here", "aws_access_key"),
    ("token " + GITHUB, "github_token"),
    ("glpat-" + "hellOworld380_testin", "gitlab_token"),
    ("xoxb-" + "34532454-e039d02840a0b9379c", "slack_token"),
    (STRIPE, "stripe_key"),
    ("sk-" + "Xi8tcNiHV9awbCcvilTeT3BlbkFJ3UDnpdEwNNm6wVBpYM0o", "openai_key"),
    ("sk-ant-api03-" + "a" * 40 + "B7" * 25, "anthropic_key"),
    ("hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "huggingface_token"),
    ("AIza" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "gcp_api_key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "private_key"),
    ("postgres://app:S3cr3tPa55@db.internal:5432/app", "url_credentials"),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt"),
    ("API_TOKEN = 'q8Zr2LmT9xVw4NbKp7Hs'", "credential_assignment"),
    ("here: Zk8vQ2xN7pR4tW9yB3mC6fH1jL5sD0gA", "high_entropy"),
])
def test_finds_secrets(text: str, kind: str) -> None:
    assert [m.kind for m in detect_secrets(text)] == [kind]


@pytest.mark.parametrize("text", [
    "pk_" + "live_j5krY8XTgIcDaHDb3YrsAfCl",          # publishable, not secret
    "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",  # a variable, not a value
    "password = changeme",
    "see src/irl_extproc/invariants/prompt_injection_config_loader.py",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",  # bare hex digest
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "AKIAZZZ is too short",
])
def test_ignores_look_alikes(text: str) -> None:
    assert detect_secrets(text) == []


def test_identifier_filter() -> None:
    assert not looks_random("get_user_profile_settings_handler")
    assert looks_random("u7Gx2QpL9vRk3TzW8yNc")


def test_invariant_redacts_tool_use_input_in_place() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "deploy", "input": {"token": GITHUB, "n": 3}}]}]}
    conversation = AnthropicMessages().decode_request(body)
    findings = Secrets(SecretsConfig()).check(conversation, CheckContext("r"))
    apply_redactions(conversation, findings)
    assert body["messages"][0]["content"][0]["input"] == {"token": "[GITHUB_TOKEN_1]", "n": 3}
