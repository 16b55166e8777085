"""`irl diff`: semantic changes per service and route, then the rendered diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from irl_extproc.cli import main
from irl_extproc.policy.load import load_policy
from irl_extproc.render.diff import semantic_diff

pytestmark = pytest.mark.unit

OLD = """version: 1
services:
  payments:
    upstream: {address: payments.svc, port: 8080}
    resilience:
      retries: {attempts: 2, retry_on: [5xx]}
    routes:
      - {name: charges, match: {prefix: /charges}}
      - {name: refunds, match: {prefix: /refunds}, resilience: {timeouts: {request: 5s}}}
  search:
    upstream: {address: search.svc, port: 80}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def diff(tmp_path: Path, new_text: str) -> list[str]:
    return semantic_diff(
        load_policy(write(tmp_path, "old.yaml", OLD)), load_policy(write(tmp_path, "new.yaml", new_text))
    )


def test_a_change_every_route_shares_is_reported_once_for_the_service(tmp_path: Path) -> None:
    assert diff(tmp_path, OLD.replace("attempts: 2", "attempts: 3")) == ["payments: resilience.retries.attempts 2 → 3"]


def test_a_route_change_names_the_route(tmp_path: Path) -> None:
    assert diff(tmp_path, OLD.replace("request: 5s", "request: 500ms")) == [
        "payments/refunds: resilience.timeouts.request 5s → 0.5s"
    ]


def test_added_removed_and_unset(tmp_path: Path) -> None:
    new = OLD.replace("      - {name: charges, match: {prefix: /charges}}\n", "").replace(
        "  search:\n    upstream: {address: search.svc, port: 80}\n",
        "  ledger:\n    upstream: {address: l.svc, port: 80}\n",
    )
    new = new.replace(", resilience: {timeouts: {request: 5s}}", "")
    assert diff(tmp_path, new) == [
        "search: service removed",
        "ledger: service added (1 routes)",
        "payments/charges: route removed",
        "payments: resilience.timeouts.request 5s → (unset)",
    ]


def test_sentinel_changes_are_semantic_too(tmp_path: Path) -> None:
    new = OLD.replace(
        "{name: charges, match: {prefix: /charges}}", "{name: charges, match: {prefix: /charges}, sentinel: {}}"
    )
    changes = diff(tmp_path, new)
    assert "payments/charges: sentinel off → on" in changes
    assert "payments/charges: sentinel.on_error (unset) → fail_closed" in changes


def test_command_prints_semantic_then_rendered_and_exits_like_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path, "old.yaml", OLD)
    new = write(tmp_path, "new.yaml", OLD.replace("attempts: 2", "attempts: 3"))
    assert main(["diff", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("payments: resilience.retries.attempts 2 → 3\n\nrendered envoy config:\n")
    assert "-                    num_retries: 2\n+                    num_retries: 3" in out
    assert main(["diff", str(old), str(old), "--target", "none"]) == 0
    assert capsys.readouterr().out == "no semantic changes\n"
    assert main(["diff", str(old), str(tmp_path / "missing.yaml")]) == 2
