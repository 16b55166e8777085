"""envoy/envoy.yaml is the example policy rendered: it must match what `irl render` writes now."""

from __future__ import annotations

from pathlib import Path

import pytest

from irl_extproc.cli import main
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_rendered_example_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the header names the policy by the path given
    assert main(["render", "policies/example.yaml", "--target", "envoy", "--out", str(tmp_path)]) == 0
    fresh = (tmp_path / "envoy.yaml").read_text()
    assert fresh == (REPO / "envoy" / "envoy.yaml").read_text(), (
        "envoy/envoy.yaml is stale: run `.venv/bin/irl render policies/example.yaml --target envoy --out envoy/`"
    )
