"""Envoy's own local replies (timeouts, overflow, rate limits, ...) in IRL's error shape.

Mappers match on response flags, which only Envoy's resilience paths set, or on the
response code details of the two replies that set no flag in time (the local rate limit
and an unreachable IRL). IRL's own ImmediateResponses match neither, so the bodies IRL
builds pass through untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from irl_extproc.codecs.registry import CODECS
from irl_extproc.render.plan import RenderPlan
from irl_extproc.render.proto_json import typed

ANTHROPIC_PATH_REGEX = r".*/messages(\?.*)?"


@dataclass(frozen=True)
class LocalReply:
    status: int
    code: str
    message: str
    flags: tuple[str, ...] = ()
    details_prefix: str = ""  # matched with CEL when Envoy sets no response flag before replying
    keep_status: bool = False  # Envoy's status stays (it may be configured elsewhere)

    def filter(self) -> dict[str, Any]:
        if self.flags:
            return {"response_flag_filter": {"flags": list(self.flags)}}
        expression = f"response.code_details.startsWith({json.dumps(self.details_prefix)})"
        return {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": typed(
                    "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", expression=expression
                ),
            }
        }


# Response flags: UT upstream timeout, UO overflow (circuit breaker), UH no healthy upstream,
# UF/UC/UR/URX/LR connection failures, resets, retries exhausted, NR no route, DT max
# duration reached. The local rate limit sets RL only after replying, so it goes by details.
LOCAL_REPLIES = (
    LocalReply(504, "upstream_timeout", "the upstream did not answer in time", flags=("UT",)),
    LocalReply(
        429, "rate_limited", "too many requests for this route; retry later", details_prefix="local_rate_limited"
    ),
    LocalReply(503, "upstream_overflow", "the upstream's circuit breaker is open; retry later", flags=("UO",)),
    LocalReply(503, "no_healthy_upstream", "no healthy upstream host is available", flags=("UH",)),
    LocalReply(
        503,
        "upstream_unavailable",
        "the upstream connection failed or was reset",
        flags=("UF", "UC", "UR", "URX", "LR"),
    ),
    LocalReply(404, "no_route", "no route matches this request", flags=("NR",)),
    LocalReply(504, "request_timeout", "the request took longer than allowed", flags=("DT",)),
    LocalReply(
        500,
        "irl_unavailable",
        "the policy enforcement service did not answer and this route fails closed",
        details_prefix="ext_proc_error",
        keep_status=True,
    ),
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
    own = reply.filter()
    body = CODECS[shape].error_body(reply.status, reply.message, reply.code)
    mapper: dict[str, Any] = {"filter": {"and_filter": {"filters": [own, extra_filter]}} if extra_filter else own}
    if not reply.keep_status:
        mapper["status_code"] = reply.status
    return mapper | {
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
