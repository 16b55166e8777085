"""Envoy's own local replies (timeouts, overflow, rate limits, ...) in IRL's error shape.

Mappers match on response flags, which only Envoy's resilience paths set; IRL's own
ImmediateResponses carry none, so the bodies IRL builds pass through untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from irl_extproc.codecs.registry import CODECS
from irl_extproc.render.plan import RenderPlan

ANTHROPIC_PATH_REGEX = r".*/messages(\?.*)?"


@dataclass(frozen=True)
class LocalReply:
    flags: tuple[str, ...]
    status: int
    code: str
    message: str


# Response flags: UT upstream timeout, UO overflow (circuit breaker), RL local rate limit,
# UH no healthy upstream, UF/UC/UR/URX connection failures, resets, retries exhausted,
# NR no route, DT max duration reached.
LOCAL_REPLIES = (
    LocalReply(("UT",), 504, "upstream_timeout", "the upstream did not answer in time"),
    LocalReply(("RL",), 429, "rate_limited", "too many requests for this route; retry later"),
    LocalReply(("UO",), 503, "upstream_overflow", "the upstream's circuit breaker is open; retry later"),
    LocalReply(("UH",), 503, "no_healthy_upstream", "no healthy upstream host is available"),
    LocalReply(
        ("UF", "UC", "UR", "URX", "LR"), 503, "upstream_unavailable", "the upstream connection failed or was reset"
    ),
    LocalReply(("NR",), 404, "no_route", "no route matches this request"),
    LocalReply(("DT",), 504, "request_timeout", "the request took longer than allowed"),
)


def _anthropic_filter(render_plan: RenderPlan) -> dict[str, Any]:
    """Requests whose errors must use the Anthropic shape: /messages paths and routes declared
    anthropic-messages (their own paths may not say so)."""
    regexes = [ANTHROPIC_PATH_REGEX]
    for entry in render_plan.routes:
        sentinel, match = entry.route.sentinel, entry.route.match
        if sentinel and sentinel.format == "anthropic-messages":
            regexes.append(
                re.escape(match.prefix) + ".*" if match.prefix is not None else re.escape(match.path or "") + r"(\?.*)?"
            )
    unique = list(dict.fromkeys(regexes))
    return {
        "header_filter": {
            "header": {"name": ":path", "string_match": {"safe_regex": {"regex": "|".join(f"(?:{r})" for r in unique)}}}
        }
    }


def _mapper(reply: LocalReply, shape: str, extra_filter: dict[str, Any] | None) -> dict[str, Any]:
    flags = {"response_flag_filter": {"flags": list(reply.flags)}}
    body = CODECS[shape].error_body(reply.status, reply.message, reply.code)
    return {
        "filter": {"and_filter": {"filters": [flags, extra_filter]}} if extra_filter else flags,
        "status_code": reply.status,
        "headers_to_add": [
            {
                "header": {"key": "x-irl-rule", "value": reply.code},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "body_format_override": {"json_format": body, "content_type": "application/json"},
    }


def local_reply_config(render_plan: RenderPlan) -> dict[str, Any]:
    anthropic = _anthropic_filter(render_plan)
    mappers = []
    for reply in LOCAL_REPLIES:
        mappers.append(_mapper(reply, "anthropic-messages", anthropic))
        mappers.append(_mapper(reply, "openai-chat", None))
    return {"mappers": mappers}
