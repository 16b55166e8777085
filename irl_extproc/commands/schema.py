"""`irl schema`: the policy file's JSON Schema, for editors and CI."""

from __future__ import annotations

import argparse
import json
from typing import Any

from irl_extproc.policy.model import PolicyDocument


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("schema", help="print the policy JSON Schema")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    schema = PolicyDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "IRL policy"
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
