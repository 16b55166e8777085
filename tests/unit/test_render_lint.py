"""Each lint fires on the setting it is about, and its message says how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from irl_extproc.policy.load import load_policy
from irl_extproc.render.lint import Lint, lint

pytestmark = pytest.mark.unit

BUDGET = "      retry_budget: {percent: 20, min_concurrency: 3}\n"
BREAKERS = "      circuit_breakers: {max_connections: 10, max_pending_requests: 10, max_requests: 10}\n"


def findings(tmp_path: Path, service_resilience: str, *, route: str = "", sentinel: str = "") -> list[Lint]:
    text = (
        "version: 1\nservices:\n  pay:\n    upstream: {address: 127.0.0.1, port: 8080}\n"
        f"    resilience:\n{BREAKERS}{service_resilience}"
        "    routes:\n      - name: r\n        match: {prefix: /, methods: [GET]}\n"
        + (f"        resilience: {route}\n" if route else "")
        + (f"        sentinel: {sentinel}\n" if sentinel else "")
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return lint(load_policy(path))


def codes(found: list[Lint]) -> list[str]:
    return [f.code for f in found]


def only(found: list[Lint], code: str) -> Lint:
    (match,) = [f for f in found if f.code == code]
    return match


def test_a_clean_policy_has_no_findings(tmp_path: Path) -> None:
    assert findings(tmp_path, BUDGET + "      retries: {attempts: 2, retry_on: [5xx]}\n") == []


def test_retries_that_outlast_the_route_timeout(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        BUDGET + "      timeouts: {request: 1s, per_try: 400ms}\n      retries: {attempts: 2, retry_on: [5xx]}\n",
    )
    finding = only(found, "retries-exceed-timeout")
    assert finding.severity == "warning"
    assert finding.where == "pay/r"
    assert "400ms x 3 tries + backoff up to 75ms = 1.275s exceeds the route timeout 1s" in finding.message
    assert "raise timeouts.request to at least 1.275s" in finding.message


def test_per_try_at_least_the_route_timeout_never_retries(tmp_path: Path) -> None:
    found = findings(tmp_path, BUDGET + "      timeouts: {request: 1s, per_try: 1s}\n      retries: {attempts: 2}\n")
    assert "nothing is ever retried" in only(found, "per-try-exceeds-timeout").message
    assert "retries-exceed-timeout" not in codes(found)


def test_the_envoy_default_route_timeout_counts(tmp_path: Path) -> None:
    found = findings(
        tmp_path, BUDGET + "      timeouts: {per_try: 10s}\n      retries: {attempts: 1, retry_on: [5xx]}\n"
    )
    assert "route timeout 15s" in only(found, "retries-exceed-timeout").message


def test_retries_without_a_budget(tmp_path: Path) -> None:
    finding = only(findings(tmp_path, "      retries: {attempts: 1}\n"), "retries-without-budget")
    assert "retry_budget: {percent: 20, min_concurrency: 3}" in finding.message


def test_unsafe_retries_on_a_route_that_accepts_post(tmp_path: Path) -> None:
    service = BUDGET + "      retries: {attempts: 1, retry_on: [5xx]}\n"
    assert codes(findings(tmp_path, service)) == []  # that route accepts only GET
    path = tmp_path / "post.yaml"
    path.write_text(
        "version: 1\nservices:\n  pay:\n    upstream: {address: 127.0.0.1, port: 8080}\n"
        f"    resilience:\n{BREAKERS}{service}"
        "    routes:\n      - name: r\n        match: {prefix: /, methods: [POST]}\n"
    )
    finding = only(lint(load_policy(path)), "unsafe-method-retries")
    assert "accepts POST" in finding.message
    assert "opt in with retries.methods including POST" in finding.message
    path.write_text(path.read_text().replace("retry_on: [5xx]}", "retry_on: [5xx], methods: [POST]}"))
    assert "unsafe-method-retries" not in codes(lint(load_policy(path)))
    path.write_text(path.read_text().replace("retry_on: [5xx], methods: [POST]}", "retry_on: [connect-failure]}"))
    assert "unsafe-method-retries" not in codes(lint(load_policy(path)))


def test_status_codes_without_the_retry_on(tmp_path: Path) -> None:
    found = findings(
        tmp_path, BUDGET + "      retries: {attempts: 1, retry_on: [5xx], retriable_status_codes: [429]}\n"
    )
    assert "add it to retries.retry_on" in only(found, "status-codes-without-retry-on").message


def test_rate_limited_backoff_without_429_retries(tmp_path: Path) -> None:
    found = findings(
        tmp_path,
        BUDGET + "      retries: {attempts: 1, rate_limited_backoff: {reset_headers: [{name: retry-after}]}}\n",
    )
    assert "429 to retriable_status_codes" in only(found, "rate-limited-backoff-unused").message


def test_max_ejection_percent_100(tmp_path: Path) -> None:
    found = findings(tmp_path, "      outlier_detection: {max_ejection_percent: 100}\n")
    assert "use 50 or less" in only(found, "max-ejection-100").message


def test_health_check_timeout_not_below_interval_and_missing_kind(tmp_path: Path) -> None:
    found = findings(tmp_path, "      health_check: {interval: 1s, timeout: 1s}\n")
    assert "shorter than the interval" in only(found, "health-check-timeout-ge-interval").message
    kind = only(found, "health-check-kind-missing")
    assert kind.severity == "error"
    assert "kind: http" in kind.message


def test_max_pending_zero(tmp_path: Path) -> None:
    found = findings(tmp_path, "      circuit_breakers: {max_pending_requests: 0}\n")
    assert "allow a small queue" in only(found, "max-pending-zero").message


def test_rate_limits_that_would_not_enforce(tmp_path: Path) -> None:
    incomplete = only(findings(tmp_path, "", route="{rate_limit: {requests: 5}}"), "rate-limit-incomplete")
    assert incomplete.severity == "error"
    assert "rate_limit: {requests: 100, per: 1s}" in incomplete.message
    too_fast = only(
        findings(tmp_path, "", route="{rate_limit: {requests: 1, per: 10ms}}"), "rate-limit-interval-too-short"
    )
    assert too_fast.severity == "error"
    burst = only(
        findings(tmp_path, "", route="{rate_limit: {requests: 10, per: 1s, burst: 5}}"), "rate-limit-burst-below-rate"
    )
    assert "effective rate is the burst" in burst.message


def test_breakers_at_envoy_defaults_is_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nservices:\n  pay:\n    upstream: {address: 127.0.0.1, port: 8080}\n")
    (finding,) = lint(load_policy(path))
    assert (finding.severity, finding.code, finding.where) == ("hint", "breakers-at-envoy-defaults", "pay")


def test_message_timeouts_that_differ_per_route(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\ndefaults:\n  resilience:\n"
        f"{BREAKERS.replace('      ', '    ')}"
        "services:\n  a:\n    upstream: {address: 127.0.0.1, port: 1}\n    routes:\n"
        "      - {name: x, match: {prefix: /x}, sentinel: {message_timeout: 1s}}\n"
        "      - {name: y, match: {prefix: /y}, sentinel: {}}\n"
    )
    (finding,) = lint(load_policy(path))
    assert finding.code == "message-timeout-per-route"
    assert finding.where == "a/y"
    assert "every route uses the longest, 1s" in finding.message


def test_findings_are_ordered_by_severity(tmp_path: Path) -> None:
    found = findings(tmp_path, "      health_check: {interval: 1s, timeout: 1s}\n      retries: {attempts: 1}\n")
    assert [f.severity for f in found] == sorted((f.severity for f in found), key=["error", "warning", "hint"].index)
    assert str(found[0]).startswith("error: pay: health_check needs 'kind'")
