"""The YAML and JSON examples in the observability, audit, Istio and GitOps docs parse, and the
audit example record is a valid irl.v1.DecisionRecord."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from google.protobuf import json_format

from irl_extproc._gen.irl.v1 import decision_pb2
from tests.conftest import REPO

pytestmark = pytest.mark.unit

DOCS = ("observability.md", "audit.md", "istio.md", "gitops.md", "metrics.md")
BLOCK = re.compile(r"```(yaml|json)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for name in DOCS:
        for language, body in BLOCK.findall((REPO / "docs" / name).read_text()):
            if language == kind:
                found.append((name, body))
    return found


def test_yaml_examples_parse() -> None:
    examples = blocks("yaml")
    assert len(examples) >= 4  # mesh config, CI step, Argo CD, Flux
    for name, body in examples:
        assert list(yaml.safe_load_all(body)), f"empty YAML example in {name}"


def test_json_examples_parse_and_the_record_fits_the_proto() -> None:
    examples = [json.loads(body) for _, body in blocks("json")]
    [record] = [e for e in examples if "prev_hash" in e]
    fields = {k: v for k, v in record.items() if k not in ("sequence", "prev_hash", "hash")}
    json_format.ParseDict(fields, decision_pb2.DecisionRecord())
