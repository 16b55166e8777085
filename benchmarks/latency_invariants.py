"""Latency of each Sentinel invariant on a ~2 KB chat request (and a ~2 KB completion for output
invariants), one core, after warm-up. Prints CPU microseconds per check (median of runs).

    .venv/bin/python benchmarks/latency_invariants.py
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from irl_extproc.codecs.openai_chat import OpenAIChat
from irl_extproc.invariants.base import CheckContext, InvariantConfig
from irl_extproc.invariants.registry import REGISTRY, build

FILLER = ("Our quarterly planning meeting covered hiring, the data platform migration and the customer "
          "onboarding revamp; the team agreed to revisit the timeline after the security review. ")
# ~2 KB with one e-mail address and one phone number, as a real prompt might have.
PROSE = FILLER * 11 + "Please contact jane.doe@example.com or +1 415 555 0132 about budget questions. "
SQL = "```sql\nSELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 100\n```"

REQUEST_CONFIGS: dict[str, dict[str, Any]] = {
    "prompt_injection": {},
    "pii": {},
    "secrets": {},
    "deny_patterns": {"patterns": [r"(?i)project\s+bluebird", r"(?i)internal\s+only"]},
    "limits": {"max_prompt_chars": 20000, "allowed_models": ["gpt-4o-mini"]},
}
RESPONSE_CONFIGS: dict[str, dict[str, Any]] = {
    "pii": {},
    "secrets": {},
    "json_schema": {"schema": {"type": "object"}, "target": "tool_arguments"},
    "patterns": {"must_not_match": [r"(?i)guaranteed returns"]},
    "links": {"allowed_domains": ["example.com"]},
    "sql": {"allowed_tables": ["orders", "customers"]},
    "canary": {"inject": False},
}


def measure(name: str, config: dict[str, Any], body: dict[str, Any], direction: str, runs: int = 200) -> float:
    invariant = build(REGISTRY[name].config.model_validate(config))
    codec = OpenAIChat()
    request = codec.decode_request(json.loads(json.dumps(REQUEST_BODY)))
    samples = []
    for _ in range(runs):
        conversation = (codec.decode_request if direction == "request" else codec.decode_response)(
            json.loads(json.dumps(body)))
        context = CheckContext("bench/route", request=request)
        started = time.process_time()  # CPU time: the machine may be shared
        invariant.check(conversation, context)
        samples.append(time.process_time() - started)
    return statistics.median(samples[runs // 10:]) * 1e6


REQUEST_BODY = {"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant for Acme Corp. Be concise."},
    {"role": "user", "content": PROSE},
]}
RESPONSE_BODY = {"choices": [{"message": {"role": "assistant", "content": PROSE + "\n" + SQL,
                                          "tool_calls": [{"id": "c", "type": "function", "function": {
                                              "name": "f", "arguments": '{"q": "orders"}'}}]}}]}


def main() -> None:
    assert isinstance(REGISTRY["pii"].config, type)
    assert issubclass(REGISTRY["pii"].config, InvariantConfig)
    print(f"{'invariant':18} {'side':9} {'us/check':>9}")
    for name, config in REQUEST_CONFIGS.items():
        print(f"{name:18} {'request':9} {measure(name, config, REQUEST_BODY, 'request'):9.1f}")
    for name, config in RESPONSE_CONFIGS.items():
        print(f"{name:18} {'response':9} {measure(name, config, RESPONSE_BODY, 'response'):9.1f}")


if __name__ == "__main__":
    main()
