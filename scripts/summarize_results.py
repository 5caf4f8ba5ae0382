"""Tables of docs/RESULTS.md from the run folders of scripts/reproduce_results.sh (mean +- sample std over seeds).

    python scripts/summarize_results.py runs/results [--copy-reports docs/results]

Reads ``OUT/<row>/s<seed>/report.json`` and ``summary.json`` and prints one markdown row per ``<row>``: test
top-1, top-5, macro and weighted F1, best validation accuracy, best epochs, top-1 per seed and the median training
time. ``--per-class dymsta,tsn`` adds per-class F1 (mean over seeds). ``--copy-reports`` copies every report.json to ``DIR/ucf101_mini_<row>_s<seed>.report.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else ""
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def row(name: str, runs: list[Path]) -> str:
    reports = [json.loads((r / "report.json").read_text()) for r in runs]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    top1 = [r["accuracy"] for r in reports]
    cells = [
        name,
        mean_std(top1),
        mean_std([r["top5_accuracy"] for r in reports]),
        mean_std([r["macro_avg"]["f1"] for r in reports]),
        mean_std([r["weighted_avg"]["f1"] for r in reports]),
        mean_std([s["best_val"]["val_acc"] for s in summaries]),
        ", ".join(str(s["best_epoch"]) for s in summaries),
        ", ".join(f"{a:.3f}" for a in top1),
        f"{statistics.median(s['train_seconds'] for s in summaries):.0f} s",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--copy-reports", type=Path, default=None)
    ap.add_argument("--per-class", default="", help="comma-separated rows: per-class F1, mean over seeds")
    args = ap.parse_args()
    print(
        "| run | test top-1 | top-5 | macro F1 | weighted F1 | best val acc | best epochs | top-1 per seed | train time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in sorted(p for p in args.out.iterdir() if p.is_dir() and p.name != "cache"):
        runs = sorted(r for r in folder.glob("s*") if (r / "report.json").is_file())
        if not runs:
            continue
        print(row(folder.name, runs))
        if args.copy_reports:
            args.copy_reports.mkdir(parents=True, exist_ok=True)
            for r in runs:
                prefix = "" if folder.name.startswith("synth_") else "ucf101_mini_"
                shutil.copy(r / "report.json", args.copy_reports / f"{prefix}{folder.name}_{r.name}.report.json")
    if args.per_class:
        per_class_table(args.out, args.per_class.split(","))


def per_class_table(out: Path, rows: list[str]) -> None:
    """Per-class F1 (mean over seeds) of each row, one column per row."""
    f1: dict[str, dict[str, float]] = {}
    for name in rows:
        reports = [json.loads(p.read_text()) for p in sorted((out / name).glob("s*/report.json"))]
        classes = reports[0]["class_names"]
        f1[name] = {c: statistics.mean(r["per_class"][c]["f1"] for r in reports) for c in classes}
    print("\n| class | " + " | ".join(f"F1 {n}" for n in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for c in f1[rows[0]]:
        print(f"| {c} | " + " | ".join(f"{f1[n][c]:.3f}" for n in rows) + " |")


if __name__ == "__main__":
    main()
