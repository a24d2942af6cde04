"""Calibration of predicted class probabilities: expected calibration error, negative log-likelihood, Brier.

For probabilities ``p`` of shape ``(N, C)`` (rows sum to 1) and labels ``y`` of shape ``(N,)``:

- ECE (Naeini et al. 2015; Guo et al. 2017, Eq. 3) with ``n_bins`` equal-width bins of the confidence
  ``max_k p_k`` over ``[0, 1]`` (bin ``b`` holds confidences in ``((b - 1)/B, b/B]``, the first also 0):
  ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``. The value depends on the number of bins, so every report
  states it (``DEFAULT_BINS`` unless given).
- NLL: ``mean_i -log p_{i, y_i}`` (probabilities floored at the smallest normal float64, so a confident
  mistake is a large finite number, not inf).
- Brier score (multi-class, Brier 1950): ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in ``[0, 2]``.

NumPy only; accepts NumPy arrays or anything ``numpy.asarray`` takes (CPU torch tensors included).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULT_BINS", "brier_score", "calibration_report", "expected_calibration_error", "nll"]

#: equal-width confidence bins of the ECE unless told otherwise (Guo et al. 2017 use 15).
DEFAULT_BINS = 15


def _check(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (N, C) with N >= 1, got {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), one class index per row; got {y.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be finite, non-negative and sum to 1 per row")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}]")
    return p, y


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (module docstring)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    p, y = _check(probs, labels)
    confidence = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    # bin b (0-based) holds (b/B, (b+1)/B]; a confidence of exactly 0 cannot occur (rows sum to 1)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, int(n_bins) - 1)
    total = 0.0
    for b in np.unique(index):
        members = index == b
        total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / p.shape[0])


def nll(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the labels."""
    p, y = _check(probs, labels)
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], np.finfo(np.float64).tiny)).mean())


def brier_score(probs: Any, labels: Any) -> float:
    """Multi-class Brier score ``mean_i ||p_i - onehot(y_i)||^2``."""
    p, y = _check(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(1).mean())


def calibration_report(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """``{"accuracy", "ece", "ece_bins", "nll", "brier"}`` of ``probs`` against ``labels``."""
    p, y = _check(probs, labels)
    return {
        "accuracy": float((p.argmax(1) == y).mean()),
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_bins": int(n_bins),
        "nll": nll(p, y),
        "brier": brier_score(p, y),
    }
