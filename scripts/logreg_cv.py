"""Logistic regression (scikit-learn) on the cached features, time- and space-averaged, standardised, with group_cv.py's folds: the reference probe of docs/RESULTS.md section 8.9. Run from the repository root after the ucf101_mini caches exist: python scripts/logreg_cv.py"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from group_cv import fold_of_groups, load_all_features
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dymsta.config import load_config, recipe_path

Path("runs/logreg_cv").mkdir(parents=True, exist_ok=True)
cfg = load_config(recipe_path("ucf101_mini"), ["cache.dir=runs/cache"])
t0 = time.time()
feats, labels, groups = load_all_features(cfg, Path("runs/group_cv"))
print("read", time.time() - t0, {k: tuple(v.shape) for k, v in feats.items()}, flush=True)
y = labels.numpy()
folds = fold_of_groups(groups, 3)


# (V, views, C, T, h, w) -> per view: mean over T,h,w; std over T of spatial means
def desc(x, with_std):
    x = x.float()
    s = x.mean(dim=(-1, -2))  # V, views, C, T
    parts = [s.mean(-1)]
    if with_std:
        parts.append(s.std(-1))
    return torch.cat(parts, -1).numpy()


np.save("runs/logreg_cv/y.npy", y)
json.dump(groups, open("runs/logreg_cv/groups.json", "w"))
for name, x in feats.items():
    np.save(f"runs/logreg_cv/{name}_mean.npy", desc(x, False))
    np.save(f"runs/logreg_cv/{name}_ms.npy", desc(x, True))


def cv(streams, kind, C):
    X = np.concatenate([np.load(f"runs/logreg_cv/{s}_{kind}.npy") for s in streams], -1)  # V, views, D
    accs = []
    for val in folds:
        tr = np.array([i for f in folds if f is not val for i in f])
        va = np.array(val)
        Xtr = X[tr].reshape(-1, X.shape[-1])
        ytr = np.repeat(y[tr], X.shape[1])
        sc = StandardScaler().fit(Xtr)
        clf = LogisticRegression(C=C, max_iter=2000).fit(sc.transform(Xtr), ytr)
        accs.append(float((clf.predict(sc.transform(X[va, 0])) == y[va]).mean()))
    return round(float(np.mean(accs)), 3), [round(a, 3) for a in accs]


for streams in [("rgb",), ("rgb", "rgbdiff", "mv")]:
    for kind in ["mean", "ms"]:
        for C in [0.01, 0.1, 1.0]:
            print(streams, kind, C, cv(streams, kind, C), flush=True)
