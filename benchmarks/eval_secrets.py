"""Secrets detector on labelled strings: per source rule, is a secret found (label secret) or not.

    .venv/bin/python benchmarks/eval_secrets.py --data ../shared/data/secrets-dev.jsonl

Rows are unit-level examples (many deliberate placeholders), so read this as a format
conformance table, not as prevalence. Rules IRL does not cover are listed as such.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from irl_extproc.detect.secrets import detect_secrets

# Formats outside IRL's catalogue (IP addresses are PII in IRL, not secrets).
NOT_COVERED = {"artifactory", "softlayer", "ibm_cloud_iam", "ibm_cos_hmac", "cloudant", "ip_public"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--errors", action="store_true", help="print the rows IRL gets wrong")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").split("\n") if line.strip()]
    for entropy_scan in (True, False):
        mode = "on (default)" if entropy_scan else "off (provider formats, JWT, URL, assignments)"
        print(f"\n== entropy scan {mode}")
        table(rows, entropy_scan, args.errors and entropy_scan)


def table(rows: list[dict[str, str]], entropy_scan: bool, errors: bool) -> None:
    counts: dict[str, Counter[str]] = {}
    started = time.perf_counter()
    verdicts = [bool(detect_secrets(r["text"], entropy_scan=entropy_scan)) for r in rows]
    seconds = time.perf_counter() - started
    for row, found in zip(rows, verdicts, strict=True):
        c = counts.setdefault(row["rule"], Counter())
        truth = row["label"] == "secret"
        c[("tp" if found else "fn") if truth else ("fp" if found else "tn")] += 1
        if errors and found != truth and row["rule"] not in NOT_COVERED:
            print("MISS" if truth else "FALSE", row["rule"], repr(row["text"][:100]))
    print(f"{'rule':22} {'secrets found':>14} {'non-secrets flagged':>20}")
    totals: Counter[str] = Counter()
    for rule in sorted(counts):
        c = counts[rule]
        note = "  (not in IRL's catalogue)" if rule in NOT_COVERED else ""
        if rule not in NOT_COVERED:
            totals.update(c)
        print(f"{rule:22} {c['tp']:>6}/{c['tp'] + c['fn']:<7} {c['fp']:>10}/{c['fp'] + c['tn']:<9}{note}")
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    print(f"covered rules: precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f} "
          f"({tp + fn} secrets, {fp + totals['tn']} non-secrets); {seconds / len(rows) * 1e6:.1f} us/row")


if __name__ == "__main__":
    main()
