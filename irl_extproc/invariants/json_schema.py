"""The completion (or a tool call's arguments) must be JSON satisfying a JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, model_validator

from irl_extproc.conversation import Conversation, Source
from irl_extproc.invariants.base import CheckContext, Finding, InvariantConfig


class JsonSchemaConfig(InvariantConfig):
    name: ClassVar[str] = "json_schema"
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="the JSON Schema, inline")
    schema_file: Path | None = Field(None, description="or a path to a JSON Schema file")
    target: Literal["content", "tool_arguments"] = Field(
        "content", description="validate the assistant's text, or each tool call's arguments"
    )
    tools: list[str] | None = Field(None, description="with target tool_arguments: only these tools")

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaConfig:
        if (self.json_schema is None) == (self.schema_file is None):
            raise ValueError("give exactly one of 'schema' (inline) or 'schema_file' (a path to a JSON file)")
        schema = self.json_schema if self.json_schema is not None else _read(self.schema_file)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"the JSON Schema is invalid at {'/'.join(map(str, exc.path)) or '(root)'}: "
                             f"{exc.message}") from None
        return self


def _read(path: Path | None) -> dict[str, Any]:
    assert path is not None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"schema_file {str(path)!r} cannot be read ({exc.strerror}); check the path") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"schema_file {str(path)!r} is not JSON (line {exc.lineno}): fix the file") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"schema_file {str(path)!r} must hold a JSON object")
    return loaded


class JsonSchema:
    """Compiled once per policy load; checks response segments."""

    whole_response = True  # judged on the complete text: a stream is checked at its end (docs/streaming.md)

    def __init__(self, config: JsonSchemaConfig) -> None:
        self.config = config
        schema = config.json_schema if config.json_schema is not None else _read(config.schema_file)
        self._validator = Draft202012Validator(schema)
        self._source: Source = "assistant" if config.target == "content" else "tool_call"

    def _finding(self, index: int, rule: str, message: str) -> Finding:
        return Finding(invariant=self.config.name, rule=f"json_schema.{rule}", action=self.config.action,
                       message=message, layer="schema", segment=index)

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        findings = []
        segments = conversation.texts(self._source)
        if self.config.tools is not None:
            segments = [(i, s) for i, s in segments if s.name in self.config.tools]
        for index, segment in segments:
            try:
                document = json.loads(segment.text)
            except (json.JSONDecodeError, RecursionError):
                findings.append(self._finding(index, "not_json", "output is not valid JSON"))
                continue
            error = next(iter(self._validator.iter_errors(document)), None)
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "(root)"
                # The validator's message may quote the value; only the location and rule are reported.
                findings.append(self._finding(index, "invalid", f"output violates the schema at {where} "
                                                                 f"({error.validator})"))
        return findings
