"""The docs/examples CI workflow is a valid GitHub workflow and its `irl` commands parse."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from irl_extproc.cli import build_parser
from tests.conftest import REPO

pytestmark = pytest.mark.unit

WORKFLOWS = sorted((REPO / "docs" / "examples").glob("*.yml"))


def check_jsonschema() -> str:
    found = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("check-jsonschema is a dev dependency: run ./dev setup")
    return found


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_workflow_schema(workflow: Path) -> None:
    result = subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_irl_commands_in_the_workflow_parse(workflow: Path) -> None:
    steps = [s for job in yaml.safe_load(workflow.read_text())["jobs"].values() for s in job["steps"]]
    commands = [
        line.strip().split(" || ")[0]
        for step in steps
        for line in step.get("run", "").splitlines()
        if line.strip().startswith("irl ")
    ]
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])
