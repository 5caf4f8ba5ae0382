"""Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` so that ``softmax(logits / T)`` are honest
probabilities, fitted on the validation split after training.

``T`` minimises the negative log-likelihood of the validation labels; the NLL is convex in ``1 / T``, so a bounded
1-D search over ``log T`` (:func:`scipy.optimize.minimize_scalar`) finds the optimum to ~1e-5 in about 30
evaluations. Dividing logits by one scalar keeps their order, so accuracy is unchanged and only the scores move.
The fitted value is stored in the checkpoint's metadata under :data:`TEMPERATURE_KEY`; ``dymsta eval`` and
``dymsta predict`` read it from there (and from an exported ONNX file's metadata).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TEMPERATURE_KEY", "TEMPERATURE_BOUNDS", "fit_temperature", "nll", "softmax"]

TEMPERATURE_KEY = "calibration_temperature"
TEMPERATURE_BOUNDS = (0.05, 20.0)  # a search box far wider than trained networks need (Guo et al. report 1-3)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)  # (N, K)
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))  # (N,)
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in :data:`TEMPERATURE_BOUNDS` minimising :func:`nll` of ``labels`` (N,) under ``logits`` (N, K).

    Raises:
        ValueError: shapes that do not match, no rows, labels outside ``[0, K)``, or non-finite logits.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0 or labels.shape != (logits.shape[0],):
        raise ValueError(f"fit_temperature: logits (N, K) and labels (N,) needed, got {logits.shape}, {labels.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("fit_temperature: logits contain NaN or infinite values")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"fit_temperature: labels must lie in [0, {logits.shape[1]})")
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(result.x))
