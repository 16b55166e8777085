"""`irl check`: evaluate bodies against a policy offline and explain every finding.

    irl check --policy policies/example.yaml request.json [--explain]
    irl check --policy policies/example.yaml --direction response completion.json
    irl check --policy policies/example.yaml --jsonl inputs.jsonl > results.jsonl

A ``--jsonl`` line is ``{"text": "..."}`` (scanned as a user prompt by the content invariants;
limits, budget and loop_guard need a full body) or ``{"body": {...}}`` (a full request or
response body); each result line gives the verdict, the score per invariant and the
findings, in input order. Content is never printed: spans are shown
masked. Exit code: 0 allow, 1 redact or block (single file), 2 usage or policy error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from irl_extproc.codecs.base import CodecError, UnpairedSurrogate, loads_unicode
from irl_extproc.codecs.registry import codec_for
from irl_extproc.conversation import Conversation, Segment
from irl_extproc.decision import Decision
from irl_extproc.engine import CompiledPolicy, CompiledRoute, decode, evaluate
from irl_extproc.invariants.base import CheckContext, Finding
from irl_extproc.invariants.common import SCORES_KEY
from irl_extproc.policy.load import PolicyError, load_policy

EXIT_FINDINGS = 1
EXIT_USAGE = 2
# A bare text has no model, token limit or caller: invariants about the request envelope skip it.
ENVELOPE_INVARIANTS = frozenset({"limits", "budget", "loop_guard"})


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="evaluate request/response bodies against a policy offline and explain the findings",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("body", nargs="?", type=Path, help="a request or response body (JSON file)")
    parser.add_argument("--policy", required=True, type=Path, help="the policy file")
    parser.add_argument("--route", help="service/route id (default: the only route with a sentinel)")
    parser.add_argument("--direction", choices=("request", "response"), default="request")
    parser.add_argument("--explain", action="store_true", help="explain each finding: layer, span, score, threshold")
    parser.add_argument("--jsonl", type=Path, help="evaluate many inputs, one JSON result per line")
    parser.set_defaults(func=run)


class CheckError(Exception):
    """A usage problem to report and exit 2 on."""


def _route(policy: CompiledPolicy, wanted: str | None) -> CompiledRoute:
    if wanted is not None:
        if wanted not in policy.routes:
            raise CheckError(f"route {wanted!r} has no sentinel in this policy; routes: {', '.join(policy.routes)}")
        return policy.routes[wanted]
    if len(policy.routes) != 1:
        raise CheckError(f"the policy has {len(policy.routes)} routes with a sentinel; pick one with --route "
                         f"({', '.join(policy.routes) or 'none'})")
    return next(iter(policy.routes.values()))


def _text_conversation(text: str) -> Conversation:
    return Conversation("request", "text", {"text": text}, [Segment("user", text, ("text",))])


def _conversation(route: CompiledRoute, direction: str, body: Any) -> Conversation:
    match = route.route.match
    codec = codec_for(route.sentinel.format, match.path or match.prefix or "/")
    if codec is None:
        raise CodecError(f"no codec for format {route.sentinel.format!r} on this route")
    return decode(codec, direction, body)


def _masked(text: str) -> str:
    """Enough to recognise a span's shape, never its content."""
    if len(text) <= 6:
        return "*" * len(text)
    return f"{text[:1]}{'*' * min(len(text) - 2, 24)}{text[-1:]} ({len(text)} chars)"


def _finding_json(f: Finding, conversation: Conversation) -> dict[str, Any]:
    out = {k: v for k, v in asdict(f).items() if v is not None and k not in ("replacement", "edit")}
    if f.segment is not None and f.segment < len(conversation.segments):
        segment = conversation.segments[f.segment]
        out["source"] = segment.source
        out["path"] = ".".join(map(str, segment.path))
    return out


def evaluate_one(route: CompiledRoute, direction: str, item: dict[str, Any]) -> tuple[Conversation, Decision,
                                                                                         dict[str, float]]:
    """Decode an input line or file and run the route's invariants on it."""
    text = isinstance(item.get("text"), str)
    if text:
        conversation, direction = _text_conversation(item["text"]), "request"
    else:
        conversation = _conversation(route, direction, item.get("body"))
    invariants = route.request if direction == "request" else route.response
    if text:
        invariants = tuple(i for i in invariants if i.config.name not in ENVELOPE_INVARIANTS)
    context = CheckContext(route_id=route.route.id)
    decision = evaluate(invariants, conversation, context, route.sentinel.mode)
    scores = {i.config.name: 0.0 for i in invariants}
    scores.update(context.state.get(SCORES_KEY, {}))
    for f in decision.findings:
        scores[f.invariant] = max(scores.get(f.invariant, 0.0), f.score)
    return conversation, decision, {k: round(v, 4) for k, v in scores.items()}


def _explain(conversation: Conversation, decision: Decision, scores: dict[str, float], out: TextIO) -> None:
    print(f"verdict: {decision.verdict}{'' if decision.enforced else ' (monitor mode: not enforced)'}", file=out)
    print("scores: " + ", ".join(f"{k}={v:.2f}" for k, v in scores.items()), file=out)
    for n, f in enumerate(decision.findings, 1):
        print(f"\n[{n}] {f.invariant} -> {f.action}  rule={f.rule}  layer={f.layer}", file=out)
        print(f"    {f.message}", file=out)
        threshold = f" (threshold {f.threshold})" if f.threshold is not None else ""
        print(f"    score {f.score}{threshold}", file=out)
        if f.segment is not None and f.segment < len(conversation.segments):
            segment = conversation.segments[f.segment]
            where = ".".join(map(str, segment.path))
            if f.start is not None and f.end is not None:
                span = _masked(segment.text[f.start:f.end])
                print(f"    in {segment.source} at {where} [{f.start}:{f.end}]: {span}", file=out)
            else:
                print(f"    in {segment.source} at {where}", file=out)


def _run_jsonl(route: CompiledRoute, direction: str, path: Path, out: TextIO) -> int:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            result: dict[str, Any] = {"line": number}
            try:
                item = loads_unicode(line)
                if not isinstance(item, dict) or not ("text" in item or "body" in item):
                    raise CodecError('each line must be an object with "text" or "body"')
                conversation, decision, scores = evaluate_one(route, direction, item)
                result |= {"verdict": decision.verdict, "scores": scores,
                           "findings": [_finding_json(f, conversation) for f in decision.findings]}
            except json.JSONDecodeError as exc:
                result |= {"verdict": "error", "error": f"line is not JSON (column {exc.colno})"}
            except UnpairedSurrogate as exc:
                result |= {"verdict": "error", "error": f"line has {exc}"}
            except CodecError as exc:
                result |= {"verdict": "error", "error": str(exc)}
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if (args.body is None) == (args.jsonl is None):
            raise CheckError("give a body file or --jsonl FILE (one of them)")
        try:
            policy = CompiledPolicy.compile(load_policy(args.policy))
        except PolicyError as exc:
            raise CheckError("\n".join(f"error: {p}" for p in exc.problems)) from None
        except ValueError as exc:  # an invariant refused its configuration when compiled
            raise CheckError(f"error: {exc}") from None
        route = _route(policy, args.route)
        if args.jsonl is not None:
            return _run_jsonl(route, args.direction, args.jsonl, sys.stdout)
        try:
            body = loads_unicode(args.body.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckError(f"cannot read {args.body}: {exc}") from None
        conversation, decision, scores = evaluate_one(route, args.direction, {"body": body})
    except CheckError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.explain:
        _explain(conversation, decision, scores, sys.stdout)
    else:
        print(json.dumps({"verdict": decision.verdict, "scores": scores,
                          "findings": [_finding_json(f, conversation) for f in decision.findings]}, indent=2))
    return EXIT_FINDINGS if decision.verdict != "allow" else 0
