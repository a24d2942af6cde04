"""Calibration metrics against independent computations (a loop over bins, scikit-learn, hand values)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from selfdistill.calibration import (
    DEFAULT_BINS,
    brier_score,
    calibration_report,
    expected_calibration_error,
    nll,
)


def _probs(n=300, c=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return p, labels


def test_ece_equals_a_loop_over_equal_width_bins():
    p, y = _probs()
    for bins in (1, 10, DEFAULT_BINS):
        confidence, predicted = p.max(1), p.argmax(1)
        total = 0.0
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            members = (confidence > lo) & (confidence <= hi)
            if members.any():
                gap = abs((predicted[members] == y[members]).mean() - confidence[members].mean())
                total += members.sum() / len(y) * gap
        assert expected_calibration_error(p, y, bins) == pytest.approx(total, abs=1e-12)


def test_a_hand_computed_ece():
    # two bins: confidences 0.6 (correct), 0.7 (wrong) in (0.5, 1]; 0.4 (correct) in (0, 0.5]
    p = np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.4, 0.3, 0.3]])
    y = np.array([0, 0, 0])
    # bin (0.5, 1]: accuracy 1/2, confidence 0.65 -> 2/3 * 0.15; bin (0, 0.5]: 1 vs 0.4 -> 1/3 * 0.6
    assert expected_calibration_error(p, y, 2) == pytest.approx(2 / 3 * 0.15 + 1 / 3 * 0.6)


def test_nll_and_brier_match_scikit_learn_and_the_definition():
    p, y = _probs(seed=1)
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=range(p.shape[1])), rel=1e-12)
    onehot = np.eye(p.shape[1])[y]
    assert brier_score(p, y) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, axis=1)), rel=1e-12)
    report = calibration_report(p, y)
    assert report["ece_bins"] == DEFAULT_BINS
    assert report["accuracy"] == pytest.approx((p.argmax(1) == y).mean())


def test_bad_input_is_refused():
    p, y = _probs(n=4)
    with pytest.raises(ValueError, match="sum to 1"):
        brier_score(p * 2, y)
    with pytest.raises(ValueError, match="labels must have shape"):
        nll(p, y[:3])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(p, y, 0)
