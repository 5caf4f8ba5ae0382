"""One markdown table from ``scripts/group_cv.py`` outputs: each variant's tail validation accuracy per CV seed and
their mean (over the seeds that ran it), best first.

    python scripts/cv_table.py docs/results/cv/cv_cache_*_s*.json

Each file is one ``--out`` of group_cv (``{variant: {"val_acc_tail": ..., ...}}``); the seed is read from the file
name's ``_s<N>`` suffix, else the file's position.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def collect(files: list[Path]) -> dict[str, dict[int, float]]:
    """``{variant: {seed: tail accuracy}}`` over the files."""
    table: dict[str, dict[int, float]] = {}
    for i, file in enumerate(files):
        match = re.search(r"_s(\d+)\.json$", file.name)
        seed = int(match.group(1)) if match else i
        for name, result in json.loads(file.read_text()).items():
            table.setdefault(name, {})[seed] = result["val_acc_tail"]
    return table


def markdown(table: dict[str, dict[int, float]]) -> str:
    seeds = sorted({s for per_seed in table.values() for s in per_seed})
    head = "| variant | CV mean | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    rows = [head, "|---|---|" + "---|" * len(seeds)]
    mean = {name: sum(v.values()) / len(v) for name, v in table.items()}
    for name in sorted(table, key=lambda n: -mean[n]):
        cells = [f"{table[name][s]:.4f}" if s in table[name] else "" for s in seeds]
        rows.append(f"| {name} | {mean[name]:.4f} ({len(table[name])}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    print(markdown(collect(ap.parse_args(argv).files)))


if __name__ == "__main__":
    main()
