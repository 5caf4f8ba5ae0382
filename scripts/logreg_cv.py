"""A reference outside the toolkit: scikit-learn logistic regression on the cached features, by group CV.

Same features and folds as ``scripts/group_cv.py`` (the recipe's own caches, whole training groups per fold; the
test list is never read): every stream averaged over space, then over time (or the time mean with the std or the
max over time beside it), the training folds' every cached view as samples, validation on view 0. Prints one
JSON line per row of docs/RESULTS.md section 8.9's first table:

    python scripts/logreg_cv.py --config ucf101_mini --set cache.dir=runs/cache
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from group_cv import fold_of_groups, load_all_features  # noqa: E402 - the script beside this one

from dymsta.config import load_config, recipe_path  # noqa: E402

ALL = ("rgb", "rgbdiff", "mv")
ROWS = [  # (streams, standardised, C, pooling over time)
    (("rgb",), True, 0.01, "mean"),
    (ALL, False, 0.01, "mean"),
    (ALL, True, 0.003, "mean"),
    (ALL, True, 0.01, "mean"),
    (ALL, True, 0.03, "mean"),
    (ALL, True, 0.003, "mean+std"),
    (ALL, True, 0.01, "mean+std"),
    (ALL, True, 0.003, "mean+max"),
    (ALL, True, 0.01, "mean+max"),
]


def pooled_features(feats: dict, pooling: str) -> dict[str, np.ndarray]:
    """``{stream: (V, views, C, T, h, w)}`` -> ``{stream: (V, views, C or 2C)}``: space mean, then ``pooling`` over time."""
    out = {}
    for name, x in feats.items():
        per_time = x.float().mean(dim=(4, 5))  # (V, views, C, T)
        parts = [per_time.mean(dim=-1)]
        if pooling == "mean+std":
            parts.append(per_time.std(dim=-1))
        elif pooling == "mean+max":
            parts.append(per_time.amax(dim=-1))
        out[name] = np.concatenate([p.numpy() for p in parts], axis=-1)
    return out


def fold_accuracy(x, y, train_idx, val_idx, *, standardise: bool, c: float) -> float:
    """Fit on every view of ``train_idx``, score view 0 of ``val_idx``."""
    x_train = x[train_idx].reshape(-1, x.shape[-1])
    y_train = np.repeat(y[train_idx], x.shape[1])
    x_val = x[val_idx, 0]
    if standardise:
        scaler = StandardScaler().fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    clf = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
    return float((clf.predict(x_val) == y[val_idx]).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ucf101_mini")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = load_config(recipe_path(args.config), args.set)
    feats, labels, groups = load_all_features(cfg, Path("runs/group_cv"))
    y = labels.numpy()
    pooled = {p: pooled_features(feats, p) for p in sorted({row[3] for row in ROWS})}
    folds = fold_of_groups(groups, args.folds)
    for streams, standardise, c, pooling in ROWS:
        x = np.concatenate([pooled[pooling][s] for s in streams], axis=-1)  # (V, views, sum C)
        accs = []
        for val in folds:
            train_idx = np.array([i for f in folds if f is not val for i in f])
            accs.append(fold_accuracy(x, y, train_idx, np.array(val), standardise=standardise, c=c))
        row = {"streams": list(streams), "standardised": standardise, "C": c, "pooling": pooling}
        row["val_acc"] = round(float(np.mean(accs)), 3)
        print(json.dumps({**row, "per_fold": [round(a, 3) for a in accs]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
