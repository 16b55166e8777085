"""Per-type precision/recall of IRL's PII detector vs Microsoft Presidio (pattern recognizers only).

Same rows, same run. An entity counts as found when a prediction of the same type overlaps it.
Presidio runs with a blank spaCy pipeline (no NER model), so only its regex/checksum
recognizers take part, which is the like-for-like comparison for a CPU-only gateway.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/eval_pii.py --data ../shared/data/pii-dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from irl_extproc.detect.pii import DEFAULT_TYPES, detect_pii

# Dataset label → IRL type; labels not listed are not PII for IRL (names, places, dates...).
LABELS = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "IBAN_CODE": "iban",
    "US_SSN": "us_ssn", "IP_ADDRESS": "ip_address", "US_DRIVER_LICENSE": "us_driver_license",
    "STREET_ADDRESS": "street_address",
}
PRESIDIO = {**LABELS, "US_PASSPORT": "us_passport", "US_ITIN": "us_itin", "MAC_ADDRESS": "mac_address"}
# date_of_birth is left out: the data labels birth dates as plain DATE_TIME, which is not PII here.
TYPES = (*(t for t in DEFAULT_TYPES if t != "date_of_birth"), "street_address")

Span = tuple[str, int, int]
Detector = Callable[[str], list[Span]]


def irl_detector() -> Detector:
    return lambda text: [(m.kind, m.start, m.end) for m in detect_pii(text, TYPES)]


def presidio_detector() -> Detector:
    import logging

    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # it tries the network; offline is fine

    # spaCy's blank English pipeline: tokenizer only, no trained model, so no NER recognizers.
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.nlp = {"en": spacy.blank("en")}
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    entities = sorted(set(PRESIDIO))

    def run(text: str) -> list[Span]:
        results = analyzer.analyze(text=text, language="en", entities=entities)
        return [(PRESIDIO[r.entity_type], r.start, r.end) for r in results if r.entity_type in PRESIDIO]

    return run


def score(rows: list[dict], predictions: list[list[Span]]) -> dict[str, tuple[int, int, int]]:
    """Per type: (true positives, false positives, false negatives) by same-type overlap."""
    tp, fp, fn = Counter[str](), Counter[str](), Counter[str]()
    for row, predicted in zip(rows, predictions, strict=True):
        gold = [(LABELS[e["type"]], e["start"], e["end"]) for e in row["entities"] if e["type"] in LABELS]
        for kind, start, end in gold:
            hit = any(k == kind and s < end and start < e for k, s, e in predicted)
            (tp if hit else fn)[kind] += 1
        for kind, start, end in predicted:
            if not any(k == kind and s < end and start < e for k, s, e in gold):
                fp[kind] += 1
    return {k: (tp[k], fp[k], fn[k]) for k in sorted(set(tp) | set(fp) | set(fn))}


def run(detector: Detector, rows: list[dict]) -> tuple[list[list[Span]], float]:
    started = time.perf_counter()
    predictions = [detector(r["text"]) for r in rows]
    return predictions, time.perf_counter() - started


def fmt(counts: tuple[int, int, int] | None) -> str:
    if counts is None:
        return "      -      -     -"
    tp, fp, fn = counts
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return f"{p:6.3f} {r:6.3f} {tp + fn:5d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="pii-dev.jsonl")
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--errors", metavar="TYPE", help="print IRL's misses and false alarms for TYPE")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").split("\n") if line.strip()]
    chars = sum(len(r["text"]) for r in rows)
    detectors = {"irl": irl_detector()}
    if not args.no_presidio:
        detectors["presidio"] = presidio_detector()
    for detector in detectors.values():  # warm up: lazy metadata and caches load outside the timing
        run(detector, rows[:50])
    results = {name: run(detector, rows) for name, detector in detectors.items()}
    tables = {name: score(rows, preds) for name, (preds, _) in results.items()}
    kinds = sorted({k for t in tables.values() for k in t})
    print(f"{len(rows)} rows, {chars} characters; P R n per type (same-type overlap)")
    print(f"{'type':18} | {'IRL  P      R     n':22} | {'Presidio  P   R     n':22}")
    for kind in kinds:
        cells = [fmt(tables[name].get(kind)) for name in results]
        print(f"{kind:18} | " + " | ".join(cells))
    for name, (_, seconds) in results.items():
        per_row = seconds / len(rows) * 1e6
        print(f"{name:9} {seconds * 1000:8.1f} ms total, {per_row:7.1f} us/row, "
              f"{seconds / chars * 529 * 1e6:7.1f} us per 529 chars")
    if len(results) == 2:
        print(f"speed-up over all rows: {results['presidio'][1] / results['irl'][1]:.1f}x")
    # One 529-character text (rows joined), the size of the reference measurement in the issue.
    text = ""
    for row in rows:
        if len(text) >= 529:
            break
        text += row["text"] + " "
    text = text[:529]
    single = {name: min(run(d, [{"text": text}] * 50)[1] / 50 for _ in range(3)) for name, d in detectors.items()}
    print("one 529-char text: " + ", ".join(f"{n} {t * 1e6:.0f} us" for n, t in single.items())
          + (f" ({single['presidio'] / single['irl']:.0f}x)" if len(single) == 2 else ""))
    if args.errors:
        for row, predicted in zip(rows, results["irl"][0], strict=True):
            gold = [(LABELS[e["type"]], e["start"], e["end"]) for e in row["entities"] if e["type"] in LABELS]
            want = {(s, e) for k, s, e in gold if k == args.errors}
            got = {(s, e) for k, s, e in predicted if k == args.errors}
            if want != got:
                text = row["text"]
                print("GOLD", [text[s:e] for s, e in want], "GOT", [text[s:e] for s, e in got], "|",
                      text[:160].replace("\n", " "))


if __name__ == "__main__":
    main()
