"""Train the prompt-injection classifier shipped in irl_extproc/data/.

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python scripts/train_injection.py --data ../shared/data/injection-dev.jsonl

Reads labelled rows ``{"text", "label": attack|benign, "source"}``, adds IRL's own synthetic
rows (scripts/injection_synthetic.py), fits a logistic regression on the exact features the
runtime computes (irl_extproc.detect.injection.features), calibrates it on grouped
out-of-fold scores (sources held out whole), prunes small weights and writes
``irl_extproc/data/injection_weights.json.gz``. numpy/scikit-learn are needed here only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from injection_synthetic import synthetic_rows  # noqa: E402

from irl_extproc.detect.injection import WEIGHTS_FILE, WINDOW, LinearModel, char_grams, tokens, windows  # noqa: E402
from irl_extproc.detect.normalize import normalize  # noqa: E402

Row = dict[str, str]
TARGET_FPR = 0.02  # the calibrated score crosses 0.5 where out-of-fold FPR is 2%
OUTPUT = Path(__file__).resolve().parent.parent / "irl_extproc" / "data" / WEIGHTS_FILE


def load_rows(path: Path) -> list[Row]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [r for r in rows if r.get("label") in ("attack", "benign") and isinstance(r.get("text"), str)]


def training_tokens(text: str) -> list[str]:
    """The classifier sees what the runtime sees: normalised text, first window, tokens."""
    norm = normalize(text).text
    start, end = windows(norm, WINDOW)[0]
    return tokens(norm[start:end])


Counts = dict[tuple[int, str], int]  # (kind, feature) -> count; kinds: 0 word, 1 char 4-gram


def feature_counts(words: list[str]) -> Counts:
    """The runtime's feature vector (see LinearModel): distinct words with their 4-grams."""
    counts: Counts = {}
    for word in set(words):
        counts[(0, word)] = 1
        for gram in char_grams(word):
            counts[(1, gram)] = counts.get((1, gram), 0) + 1
    return counts


class Featurized:
    """Rows turned into feature sets once, so cross-validation refits are cheap."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = list(rows)
        self.counts = [feature_counts(training_tokens(r["text"])) for r in self.rows]
        self.labels = np.array([r["label"] == "attack" for r in self.rows], dtype=np.int8)
        self.groups = [r["source"] for r in self.rows]

    def matrix(self, index: Sequence[int], vocab: dict[tuple[int, str], int]) -> csr_matrix:
        data, cols, ptr = [], [], [0]
        for i in index:
            counts = self.counts[i]
            scale = 1.0 / math.sqrt(max(sum(counts.values()), 1))  # the runtime's L2 normalisation
            for key, count in counts.items():
                col = vocab.get(key)
                if col is not None:
                    cols.append(col)
                    data.append(count * scale)
            ptr.append(len(cols))
        return csr_matrix((data, cols, ptr), shape=(len(index), len(vocab)), dtype=np.float64)


def fit(data: Featurized, index: Sequence[int], c: float = 4.0, min_df: int = 2) -> LinearModel:
    """Fit on the given rows; returns an uncalibrated model (calibration (1, 0))."""
    df: dict[tuple[int, str], int] = {}
    for i in index:
        for key in data.counts[i]:
            df[key] = df.get(key, 0) + 1
    vocab = {key: n for n, key in enumerate(k for k, v in df.items() if v >= min_df)}
    x = data.matrix(index, vocab)
    y = data.labels[list(index)]
    # Balance by source as well as class, so one big template family does not dominate.
    sources = [data.groups[i] for i in index]
    per_source = {s: sources.count(s) for s in set(sources)}
    weight = np.array([1.0 / math.sqrt(per_source[s]) for s in sources])
    for label in (0, 1):
        weight[y == label] *= len(y) / (2 * weight[y == label].sum())
    clf = LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=0)
    clf.fit(x, y, sample_weight=weight)
    coef = clf.coef_[0]
    kinds: list[dict[str, float]] = [{}, {}]
    for (kind, f), col in vocab.items():
        kinds[kind][f] = float(coef[col])
    return LinearModel(*kinds, float(clf.intercept_[0]), (1.0, 0.0))


def grouped_folds(groups: Sequence[str], folds: int) -> list[list[int]]:
    """Whole sources per fold, largest first into the smallest fold."""
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    buckets: list[list[str]] = [[] for _ in range(folds)]
    totals = [0] * folds
    for g in sorted(sizes, key=lambda g: -sizes[g]):
        k = totals.index(min(totals))
        buckets[k].append(g)
        totals[k] += sizes[g]
    return [[i for i, g in enumerate(groups) if g in set(b)] for b in buckets if b]


def calibrate(data: Featurized, index: Sequence[int], folds: int = 4) -> tuple[float, float]:
    """Platt slope from grouped out-of-fold logits; intercept puts 0.5 at the 2%-FPR point."""
    sub_groups = [data.groups[i] for i in index]
    logits = np.zeros(len(index))
    for fold in grouped_folds(sub_groups, folds):
        held = set(fold)
        train = [index[j] for j in range(len(index)) if j not in held]
        model = fit(data, train)
        for j in fold:
            logits[j] = model.logit(training_tokens(data.rows[index[j]]["text"]))
    y = data.labels[list(index)]
    platt = LogisticRegression(C=1e4, random_state=0).fit(logits.reshape(-1, 1), y)
    slope = float(platt.coef_[0][0])
    # The operating point is set on public benign prompts; IRL's own synthetic hard negatives
    # shape the weights but would push the cut up to where real attacks are missed.
    real = np.array([not data.groups[i].startswith("irl_") for i in index])
    benign = np.sort(logits[(y == 0) & real])
    cut = float(benign[min(len(benign) - 1, math.ceil((1 - TARGET_FPR) * len(benign)))])
    return slope, -slope * cut


def train(data: Featurized, index: Sequence[int], max_features: int = 60000) -> LinearModel:
    model = fit(data, index)
    a, b = calibrate(data, index)
    tables = (model.word_weights, model.char_weights)
    ranked = sorted(((abs(w), kind, f, w) for kind, table in enumerate(tables) for f, w in table.items()),
                    reverse=True)[:max_features]
    kept: list[dict[str, float]] = [{}, {}]
    for _, kind, f, w in ranked:
        if abs(w) >= 1e-3:
            kept[kind][f] = round(w, 4)
    return LinearModel(*kept, round(model.bias, 4), (round(a, 4), round(b, 4)))


def save(model: LinearModel, path: Path, sources: list[str]) -> None:
    payload = {
        "format": 2, "trained_on_sources": sources, "bias": model.bias, "calibration": list(model.calibration),
        "word_weights": model.word_weights, "char_weights": model.char_weights,
    }
    raw = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled JSONL (text, label, source)")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--no-synthetic", action="store_true", help="train on --data only")
    args = parser.parse_args()
    rows = load_rows(args.data) + ([] if args.no_synthetic else synthetic_rows())
    data = Featurized(rows)
    model = train(data, range(len(rows)))
    save(model, args.out, sorted(set(data.groups)))
    size = args.out.stat().st_size
    print(f"{len(rows)} rows from {len(set(data.groups))} sources -> {args.out} "
          f"({len(model.word_weights)} word + {len(model.char_weights)} 4-gram weights, {size / 1e6:.2f} MB, "
          f"calibration a={model.calibration[0]} b={model.calibration[1]})")


if __name__ == "__main__":
    main()
