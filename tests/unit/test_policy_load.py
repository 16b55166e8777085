"""Invalid policy files paired with the exact message a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irl_extproc.policy.load import PolicyError, load_policy
from irl_extproc.policy.resolve import resolve_routes

pytestmark = pytest.mark.unit

HEAD = """version: 1
services:
  chat:
    upstream: {address: 127.0.0.1, port: 8080}
    routes:
      - match: {prefix: /v1/chat/completions}
"""


def problems(tmp_path: Path, text: str, name: str = "p.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]


def test_misspelt_field_names_file_line_path_and_fix(tmp_path: Path) -> None:
    text = HEAD + "        sentinel:\n          mdoe: enforce\n"
    assert problems(tmp_path, text) == [
        "p.yaml:8: services.chat.routes[0].sentinel.mdoe: Extra inputs are not permitted — remove it or "
        "check its spelling against `irl schema`"
    ]


def test_unknown_invariant_lists_valid_names(tmp_path: Path) -> None:
    text = HEAD + "        sentinel:\n          request:\n            - prompt_injektion: {}\n"
    (message,) = problems(tmp_path, text)
    assert message.startswith("p.yaml:9: services.chat.routes[0].sentinel.request[0]: each invariant is a one-key")
    assert "deny_patterns" in message
    assert "limits" in message


def test_invalid_re2_pattern_names_the_pattern(tmp_path: Path) -> None:
    text = HEAD + "        sentinel:\n          request:\n            - deny_patterns: {patterns: ['(a)\\1']}\n"
    (message,) = problems(tmp_path, text)
    assert message.startswith("p.yaml:9: services.chat.routes[0].sentinel.request[0].deny_patterns.patterns: ")
    assert "is not valid RE2 syntax" in message


def test_bad_duration_says_how_to_write_it(tmp_path: Path) -> None:
    text = HEAD + "        sentinel: {message_timeout: 200}\n"
    (message,) = problems(tmp_path, text)
    assert "write it like '250ms', '2s'" in message


def test_match_needs_exactly_one_kind(tmp_path: Path) -> None:
    text = HEAD.replace("{prefix: /v1/chat/completions}", "{prefix: /a, path: /b}")
    (message,) = problems(tmp_path, text)
    assert message == (
        "p.yaml:6: services.chat.routes[0].match: give exactly one of 'prefix' or 'path', "
        "e.g. {prefix: /v1/chat/completions}"
    )


def test_duplicate_route_names_are_refused(tmp_path: Path) -> None:
    text = HEAD + "      - match: {prefix: /v1/chat/completions/}\n"
    (message,) = problems(tmp_path, text)
    assert "route name 'v1-chat-completions' is already used by routes[0]" in message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, HEAD + "  bad: [\n")
    assert message.startswith("p.yaml:8: <root>: not valid YAML/JSON")


def test_wrong_version(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, HEAD.replace("version: 1", "version: 2"))
    assert message.startswith("p.yaml:1: version: Input should be 1")


def test_json_policy_is_accepted_with_the_same_model(tmp_path: Path) -> None:
    path = tmp_path / "invariant.json"
    document = {
        "version": 1,
        "services": {
            "chat": {
                "upstream": {"address": "127.0.0.1", "port": 8080},
                "routes": [
                    {
                        "match": {"prefix": "/v1/chat/completions"},
                        "sentinel": {"request": [{"limits": {"max_prompt_chars": 10}}]},
                    }
                ],
            }
        },
    }
    path.write_text(json.dumps(document, indent=2))
    (route,) = resolve_routes(load_policy(path).document)
    assert route.id == "chat/v1-chat-completions"
    assert route.sentinel is not None
    assert route.sentinel.request[0].name == "limits"


def test_json_errors_have_lines_too(tmp_path: Path) -> None:
    text = json.dumps({"version": 1, "services": {"chat": {"upstream": {"address": "x", "port": 0}}}}, indent=2)
    (message,) = problems(tmp_path, text, "invariant.json")
    assert message.startswith(
        "invariant.json:7: services.chat.upstream.port: Input should be greater than or equal to 1"
    )


def test_merge_order_defaults_service_route(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\n"
        "defaults: {sentinel: {mode: monitor, on_error: fail_open, block_status: 451}}\n"
        "services:\n  chat:\n    upstream: {address: 127.0.0.1, port: 8080}\n"
        "    sentinel: {on_error: fail_closed}\n"
        "    routes:\n      - match: {prefix: /a}\n        sentinel: {mode: enforce}\n"
        "      - match: {prefix: /b}\n"
    )
    a, b = resolve_routes(load_policy(path).document)
    assert a.sentinel is not None
    assert b.sentinel is not None
    assert (a.sentinel.mode, a.sentinel.on_error, a.sentinel.block_status) == ("enforce", "fail_closed", 451)
    assert (b.sentinel.mode, b.sentinel.on_error) == ("monitor", "fail_closed")


def test_defaults_alone_do_not_put_irl_in_a_route(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\ndefaults: {sentinel: {mode: monitor}}\n"
        "services:\n  web:\n    upstream: {address: example.com, port: 443, tls: true}\n"
    )
    (route,) = resolve_routes(load_policy(path).document)
    assert route.sentinel is None
