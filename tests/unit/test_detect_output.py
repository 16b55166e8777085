"""Response-side invariants: json_schema, patterns, links, sql, canary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from irl_extproc.codecs.anthropic_messages import AnthropicMessages
from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import CheckContext
from irl_extproc.invariants.canary import STATE_KEY, Canary, CanaryConfig
from irl_extproc.invariants.json_schema import JsonSchema, JsonSchemaConfig
from irl_extproc.invariants.links import Links, LinksConfig
from irl_extproc.invariants.patterns import Patterns, PatternsConfig
from irl_extproc.invariants.sql import Sql, SqlConfig

pytestmark = pytest.mark.unit


def completion(content: str, tool_args: str | None = None) -> Conversation:
    message: dict[str, object] = {"role": "assistant", "content": content}
    if tool_args is not None:
        message["tool_calls"] = [{"id": "c", "type": "function", "function": {"name": "run_sql",
                                                                              "arguments": tool_args}}]
    return OpenAIChat().decode_response({"choices": [{"message": message}]})


def rules(invariant: object, conversation: Conversation, context: CheckContext | None = None) -> list[str]:
    return [f.rule for f in invariant.check(conversation, context or CheckContext("r"))]  # type: ignore[attr-defined]


SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}


def test_json_schema_inline_and_file(tmp_path: Path) -> None:
    inline = JsonSchema(JsonSchemaConfig.model_validate({"schema": SCHEMA}))
    assert rules(inline, completion('{"answer": "yes"}')) == []
    assert rules(inline, completion('{"answer": 3}')) == ["json_schema.invalid"]
    assert rules(inline, completion("Sure! here it is")) == ["json_schema.not_json"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    from_file = JsonSchema(JsonSchemaConfig(schema_file=path, target="tool_arguments"))
    assert rules(from_file, completion("", tool_args='{"nope": 1}')) == ["json_schema.invalid"]


def test_json_schema_config_errors_say_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one of 'schema'"):
        JsonSchemaConfig()
    with pytest.raises(ValidationError, match="JSON Schema is invalid"):
        JsonSchemaConfig.model_validate({"schema": {"type": "nonsense"}})
    with pytest.raises(ValidationError, match="cannot be read"):
        JsonSchemaConfig(schema_file=tmp_path / "missing.json")


def test_patterns_must_and_must_not() -> None:
    patterns = Patterns(PatternsConfig(must_match=[r"(?i)disclaimer"], must_not_match=[r"\bguaranteed\b"]))
    assert rules(patterns, completion("Returns are guaranteed.")) == ["patterns.must_match[0]",
                                                                       "patterns.must_not_match[0]"]
    assert rules(patterns, completion("Disclaimer: past returns vary.")) == []
    with pytest.raises(ValidationError, match="not valid RE2"):
        PatternsConfig(must_not_match=["(?<=x)y"])


def test_links_allow_domains_and_subdomains() -> None:
    links = Links(LinksConfig(allowed_domains=["example.com"], allow_http=False))
    text = ("See https://docs.example.com/a, http://example.com/b, https://example.com.evil.io/c "
            "and https://example.com@phish.io/login.")
    findings = links.check(completion(text), CheckContext("r"))
    assert [f.rule for f in findings] == ["links.insecure", "links.domain", "links.domain"]
    assert text[findings[1].start:findings[1].end] == "https://example.com.evil.io/c"
    with pytest.raises(ValidationError, match="bare domain"):
        LinksConfig(allowed_domains=["https://example.com"])


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT id FROM orders WHERE total > 10", []),
    ("WITH t AS (SELECT * FROM orders) SELECT count(*) FROM t", []),
    ("SELECT * FROM orders; DROP TABLE orders", ["sql.multiple_statements"]),
    ("UPDATE orders SET total = 0", ["sql.not_read_only"]),
    ("SELECT * FROM salaries", ["sql.table_not_allowed"]),
    ("SELECT pg_sleep(100)", ["sql.function_not_allowed"]),
    ("SELECT * FROM (", ["sql.unparsable"]),
    ("SELEC * FORM", ["sql.not_read_only"]),  # not SQL sqlglot knows: an opaque command
])
def test_sql_read_only_on_allowed_tables(sql: str, expected: list[str]) -> None:
    invariant = Sql(SqlConfig(allowed_tables=["orders"]))
    assert rules(invariant, completion("", tool_args=sql)) == expected
    assert rules(invariant, completion(f"Here you go:\n```sql\n{sql}\n```")) == expected


def test_sql_ignores_prose() -> None:
    assert rules(Sql(SqlConfig()), completion("Delete the old rows, then select the rest.")) == []


def test_canary_planted_in_request_and_caught_in_response() -> None:
    canary = Canary(CanaryConfig())
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = OpenAIChat().decode_request(body)
    context = CheckContext("r")
    assert canary.prepare(request, context) is True
    token = context.state[STATE_KEY]
    assert token in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "hi"
    assert request.segments[1].path == ("messages", 1, "content")
    context.request = request
    assert rules(canary, completion("Hello there"), context) == []
    leaked = canary.check(completion(f"My reference is {token}."), context)
    assert [f.rule for f in leaked] == ["canary.leaked"]
    assert leaked[0].replacement == "[REDACTED]"


def test_canary_flags_system_prompt_overlap() -> None:
    system = ("You are Acme's support assistant. Only discuss Acme routers. Never offer refunds above fifty "
              "dollars without a manager. Escalate angry customers to the hotline.")
    request = AnthropicMessages().decode_request(
        {"model": "m", "max_tokens": 5, "system": system, "messages": [{"role": "user", "content": "x"}]})
    context = CheckContext("r", request=request)
    canary = Canary(CanaryConfig(inject=False))
    assert rules(canary, completion("Sure, routers are great."), context) == []
    assert rules(canary, completion(f"My instructions say: {system}"), context) == [
        "canary.system_prompt_overlap"]
