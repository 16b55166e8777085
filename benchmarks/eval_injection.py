"""Prompt-injection detector: cross-validation grouped by source family, hard negatives, latency.

Each fold holds out one whole source family (all rows from one public repository) and trains
on the rest plus IRL's synthetic rows; the held-out rows are then scored by the full detector
(normalisation + heuristics + that fold's classifier). Reported per source and pooled:
TPR at the threshold where pooled out-of-fold FPR is at most 2%, and at the policy's default
threshold 0.5. The hard negatives (benchmarks/data/hard_negatives.jsonl, written for IRL and
never trained on) are scored with the shipped model.

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python benchmarks/eval_injection.py --data ../shared/data/injection-dev.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from injection_synthetic import synthetic_rows  # noqa: E402
from train_injection import Featurized, load_rows, train  # noqa: E402

from irl_extproc.detect.injection import scan, shipped_model  # noqa: E402

HARD_NEGATIVES = ROOT / "benchmarks" / "data" / "hard_negatives.jsonl"
DEFAULT_THRESHOLD = 0.5


def family(source: str) -> str:
    """Sources from one repository share templates: ``--group family`` holds them out together."""
    return source.split("_", maxsplit=1)[0].split("(", maxsplit=1)[0]


def threshold_at_fpr(benign_scores: list[float], fpr: float) -> float:
    """Smallest threshold (score >= t flags) whose FPR on these scores is at most ``fpr``."""
    ranked = sorted(benign_scores, reverse=True)
    allowed = int(fpr * len(ranked))
    return ranked[allowed] + 1e-9 if allowed < len(ranked) else 0.0


def cross_validate(rows: list[dict[str, str]], by_family: bool) -> list[tuple[dict[str, str], float, float]]:
    """(row, detector score, classifier-only score) out of fold for every real row."""
    synthetic = synthetic_rows()
    data = Featurized(rows + synthetic)
    group = family if by_family else str
    out = []
    for held in sorted({group(r["source"]) for r in rows}):
        started = time.perf_counter()
        train_index = [i for i, r in enumerate(data.rows)
                       if r["source"].startswith("irl_") or group(r["source"]) != held]
        model = train(data, train_index)
        test = [r for r in rows if group(r["source"]) == held]
        for r in test:
            verdict = scan(r["text"], model)
            classifier = next((e.score for e in verdict.evidence if e.layer == "classifier"), 0.0)
            out.append((r, verdict.score, classifier))
        seconds = time.perf_counter() - started
        print(f"  fold {held[:40]:40} {len(test):5d} rows held out, {seconds:5.1f}s", file=sys.stderr)
    return out


def report(results: list[tuple[dict[str, str], float, float]], column: int, title: str) -> float:
    benign = [res[column] for res in results if res[0]["label"] == "benign"]
    cut = threshold_at_fpr(benign, 0.02)
    print(f"\n{title}: threshold at pooled OOF FPR<=2% = {cut:.3f}")
    print(f"{'source':48} {'label':7} {'n':>5} {'flag@2%':>8} {'flag@0.5':>9}")
    by_source: dict[str, list[float]] = defaultdict(list)
    labels = {}
    for row, *scores in results:
        by_source[row["source"]].append(scores[column - 1])
        labels[row["source"]] = row["label"]
    for source in sorted(by_source, key=lambda s: (labels[s], s)):
        scores = by_source[source]
        at_cut = sum(s >= cut for s in scores) / len(scores)
        at_default = sum(s >= DEFAULT_THRESHOLD for s in scores) / len(scores)
        print(f"{source[:48]:48} {labels[source]:7} {len(scores):5d} {at_cut:8.3f} {at_default:9.3f}")
    attacks = [res[column] for res in results if res[0]["label"] == "attack"]
    for name, t in (("2%-FPR threshold", cut), ("default 0.5", DEFAULT_THRESHOLD)):
        tpr = sum(s >= t for s in attacks) / len(attacks)
        fpr = sum(s >= t for s in benign) / len(benign)
        print(f"pooled @ {name:17}: TPR {tpr:.3f}  FPR {fpr:.3f}  ({len(attacks)} attacks, {len(benign)} benign)")
    return cut


def hard_negatives(cut: float) -> None:
    rows = load_rows(HARD_NEGATIVES)
    scores = [(scan(r["text"]).score, r["text"]) for r in rows]
    for name, t in (("2%-FPR threshold", cut), ("default 0.5", DEFAULT_THRESHOLD)):
        flagged = [text for s, text in scores if s >= t]
        print(f"hard negatives @ {name:17}: FPR {len(flagged) / len(rows):.3f} ({len(flagged)}/{len(rows)})")
    for s, text in sorted(scores, reverse=True)[:5]:
        print(f"   highest {s:.3f}  {text[:90]!r}")


def latency(rows: list[dict[str, str]]) -> None:
    """CPU time per scan on 2 KB and 32 KB slices of the data's own benign and attack text
    (varied, realistic vocabulary): the first scan of a slice (cold word cache) and the best
    of repeated scans (warm)."""
    model = shipped_model()
    for label in ("benign", "attack"):
        blob = " ".join(r["text"] for r in rows if r["label"] == label)
        for size in (2048, 32768):
            cold, warm = [], []
            for k in range(5):
                text = blob[k * size:(k + 1) * size]
                started = time.process_time()  # CPU time: the machine may be shared
                scan(text, model)
                cold.append(time.process_time() - started)
                runs = []
                for _ in range(5):
                    started = time.process_time()
                    scan(text, model)
                    runs.append(time.process_time() - started)
                warm.append(min(runs))
            print(f"latency {label:6} {size // 1024:2d} KB: cold median {sorted(cold)[2] * 1000:6.2f} ms, "
                  f"warm median {sorted(warm)[2] * 1000:6.2f} ms CPU per scan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="injection-dev.jsonl")
    parser.add_argument("--group", choices=("source", "family"), default="source",
                        help="hold out one source per fold, or every source of one repository")
    args = parser.parse_args()
    rows = load_rows(args.data)
    results = cross_validate(rows, args.group == "family")
    report(results, 2, "classifier alone")
    cut = report(results, 1, "full detector (normalisation + heuristics + classifier)")
    hard_negatives(cut)
    latency(rows)


if __name__ == "__main__":
    main()
