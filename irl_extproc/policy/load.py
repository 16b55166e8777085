"""Load a policy file (YAML or JSON) into a validated ``PolicyDocument``.

Errors name the file, the line where the YAML/JSON parser can tell, the field path
and what to write instead; nothing is swallowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from irl_extproc.policy.model import PolicyDocument

Loc = tuple[str | int, ...]

_FIXES = {
    "extra_forbidden": "remove it or check its spelling against `irl schema`",
    "missing": "add it",
    "literal_error": "use one of the listed values",
}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"


class PolicyError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class LoadedPolicy:
    document: PolicyDocument
    source: str
    version: str  # sha256 of the file's bytes: the policy version in decisions and rendered headers


def format_path(loc: Loc) -> str:
    out = ""
    previous: str | int | None = None
    for part in loc:
        if part == previous and isinstance(part, str):
            continue  # discriminated unions repeat the invariant name as a tag
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        previous = part
    return out


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the deepest YAML node that ``loc`` reaches."""
    if node is None:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is not None:  # else: a union tag, not a key in the file
                node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return int(node.start_mark.line) + 1


def parse_text(text: str, source: str) -> PolicyDocument:
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None) or getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise PolicyError([Problem(source, line or None, "", f"not valid YAML/JSON: {exc}")]) from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        node = None  # JSON that YAML cannot read: problems are reported without lines
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            fix = _FIXES.get(error["type"])
            message = error["msg"].removeprefix("Value error, ") + (f" — {fix}" if fix else "")
            problems.append(Problem(source, _line_of(node, loc), format_path(loc), message))
        raise PolicyError(problems) from None


def load_policy(path: str | Path) -> LoadedPolicy:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem(str(path), None, "", f"cannot read the policy: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(str(path), None, "", f"not UTF-8 at byte {exc.start}")]) from None
    document = parse_text(text, str(path))
    from irl_extproc.policy.resolve import check_semantics

    check_semantics(document, str(path))
    return LoadedPolicy(document, str(path), hashlib.sha256(raw).hexdigest())
