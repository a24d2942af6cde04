"""Choosing the round without the test set: KernelSelfDistillation(n_rounds="auto", selection=...)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import KFold

from selfdistill.kernel import KernelSelfDistillation, Spectrum, kernel_matrix
from selfdistill.kernel.filter_estimators import SpectralCutoff
from selfdistill.kernel.selection import SelectionResult, check_n_rounds, split_indices


def _data(K=60, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    y = np.sin(3 * X[:, 0]) + noise * rng.normal(size=K)
    X_test = rng.uniform(-1, 1, size=(200, 2))
    return X, y, X_test, np.sin(3 * X_test[:, 0])


@pytest.mark.parametrize("selection", ["gcv", "holdout", "kfold"])
def test_auto_predicts_with_the_chosen_round_of_the_full_chain(selection):
    X, y, X_test, _ = _data()
    est = KernelSelfDistillation(
        gamma=1.0, epsilon=0.01, n_rounds="auto", selection=selection, random_state=0
    ).fit(X, y)
    full = KernelSelfDistillation(gamma=1.0, epsilon=0.01, n_rounds=None).fit(X, y)
    sel = est.selection_
    assert isinstance(sel, SelectionResult) and sel.criterion == selection
    assert sel.n_candidates == full.n_rounds_ == est.full_result_.n_rounds
    assert est.n_rounds_ == sel.chosen + 1 == est.result_.n_rounds and est.c_.shape == (est.n_rounds_,)
    np.testing.assert_allclose(est.predict(X_test), full.predict(X_test, round=sel.chosen), rtol=1e-12)
    assert len(list(est.staged_predict(X_test))) == est.n_rounds_
    assert np.argmin(sel.scores) == sel.chosen
    assert est.result_.status in ("completed", "collapsed") and str(sel.chosen) in est.result_.message


def test_gcv_scores_are_the_filter_formula_on_the_chain():
    X, y, _, _ = _data()
    est = KernelSelfDistillation(gamma=1.0, epsilon=0.02, n_rounds="auto").fit(X, y)
    chain = est.full_result_
    K = len(y)
    trace = chain.b_diag.sum(axis=1)
    expected = chain.train_mse / (1 - trace / K) ** 2
    np.testing.assert_allclose(est.selection_.scores, expected, rtol=1e-10)


def test_kfold_scores_are_refits_of_the_same_estimator_on_each_training_part():
    X, y, _, _ = _data(K=40)
    est = KernelSelfDistillation(
        gamma=1.0, epsilon=0.02, n_rounds="auto", selection="kfold", n_folds=4, random_state=7
    ).fit(X, y)
    T = est.full_result_.n_rounds
    sse = np.zeros(T)
    for train, held in KFold(4, shuffle=True, random_state=7).split(X):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            part = KernelSelfDistillation(gamma=1.0, epsilon=0.02, max_rounds=T).fit(X[train], y[train])
        for t, pred in enumerate(part.staged_predict(X[held])):  # rounds after a collapse predict 0
            sse[t] += np.sum((pred - y[held]) ** 2)
        for t in range(part.n_rounds_, T):
            sse[t] += np.sum(y[held] ** 2)
    np.testing.assert_allclose(est.selection_.scores, sse / len(y), rtol=1e-10)


def test_precomputed_kernel_selects_like_the_named_kernel():
    X, y, _, _ = _data(K=40)
    gram = kernel_matrix(X, kernel="rbf", gamma=1.0)
    for selection in ("holdout", "kfold"):
        named = KernelSelfDistillation(
            gamma=1.0, epsilon=0.02, n_rounds="auto", selection=selection, random_state=3
        )
        pre = KernelSelfDistillation(
            kernel="precomputed", epsilon=0.02, n_rounds="auto", selection=selection, random_state=3
        )
        np.testing.assert_allclose(
            named.fit(X, y).selection_.scores, pre.fit(gram, y).selection_.scores, rtol=1e-9
        )


def test_known_answers_pure_noise_picks_a_late_round_and_noiseless_labels_round_zero():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, size=(80, 2))
        noise = rng.normal(size=80)  # labels independent of X: the best predictor is 0, the latest round
        smooth = np.sin(2 * X[:, 0])  # noiseless smooth labels: every round only adds bias, round 0 is best
        for selection in ("gcv", "holdout", "kfold"):
            est = KernelSelfDistillation(
                gamma=2.0, epsilon=0.05, epsilon_mode="relative", n_rounds="auto", selection=selection,
                random_state=seed,
            ).fit(X, noise)  # fmt: skip
            assert est.n_rounds_ >= est.full_result_.n_rounds - 1
            est = KernelSelfDistillation(
                gamma=3.0, epsilon=0.01, epsilon_mode="relative", n_rounds="auto", selection=selection,
                random_state=seed,
            ).fit(X[:, :1], smooth)  # fmt: skip
            assert est.n_rounds_ == 1 and est.full_result_.n_rounds > 3


def test_known_answer_gcv_finds_the_number_of_signal_directions_of_a_cutoff():
    """Labels = signal on the 5 leading eigen-directions of G + noise: the right cut-off is 5."""
    picks = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        gram = kernel_matrix(rng.uniform(-1, 1, size=(150, 2)), kernel="rbf", gamma=1.0)
        V = Spectrum.from_gram(gram).eigenvectors
        z = np.zeros(150)
        z[-5:] = rng.choice([-1, 1], 5) * rng.uniform(3, 5, 5)
        y = V @ z + 0.3 * rng.normal(size=150)
        est = SpectralCutoff(kernel="precomputed").fit(gram, y)
        picks.append(int(est.path_.params[est.step_]))
    assert picks.count(5) >= 6 and max(picks) <= 7, picks


def test_selection_result_prints_plots_and_saves(tmp_path):
    X, y, _, _ = _data()
    est = KernelSelfDistillation(gamma=1.0, epsilon=0.01, n_rounds="auto", selection="kfold", n_folds=3).fit(
        X, y
    )
    sel = est.selection_
    text = str(sel)
    assert "kfold" in text and "<- chosen" in text and len(text.splitlines()) == sel.n_candidates + 2
    assert sel.split_scores.shape == (3, sel.n_candidates)
    rows = sel.to_csv(tmp_path / "sel.csv").read_text().splitlines()
    assert rows[0] == "step,round,kfold,dof,train_mse,chosen" and len(rows) == sel.n_candidates + 1
    import json

    data = json.loads(sel.to_json(tmp_path / "sel.json").read_text())
    assert data["chosen"] == sel.chosen and len(data["scores"]) == sel.n_candidates
    assert sel.plot().axes
    assert "SelectionResult" in repr(sel)


def test_fixed_alpha_and_mixing_chains_select_too():
    X, y, X_test, _ = _data()
    est = KernelSelfDistillation(gamma=1.0, alpha=0.01, xi=0.7, n_rounds="auto", selection="holdout").fit(
        X, y
    )
    assert est.full_result_.status == "converged"
    assert 1 <= est.n_rounds_ <= est.full_result_.n_rounds
    np.testing.assert_allclose(
        est.predict(X_test),
        est.full_result_.predict(kernel_matrix(X_test, X, gamma=1.0), round=est.n_rounds_ - 1),
    )
    assert len(est.result_.xi_rounds) == est.n_rounds_


@pytest.mark.parametrize("bad", [True, False, 0, -2, 1.5, "all", "AUTO", [3]])
def test_n_rounds_must_be_a_positive_int_none_or_auto(bad):
    X, y, _, _ = _data(K=20)
    with pytest.raises(ValueError, match="n_rounds must be a positive integer, None .* or 'auto'") as info:
        KernelSelfDistillation(gamma=1.0, epsilon=0.05, n_rounds=bad).fit(X, y)
    assert "\n" not in str(info.value)
    assert check_n_rounds(3) == 3 and check_n_rounds(np.int64(2)) == 2 and check_n_rounds("auto") == "auto"


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(selection="loo"), r"selection='loo' is unknown; use one of 'gcv', 'holdout', 'kfold'"),
        (dict(selection="holdout", holdout_fraction=0.0), r"holdout_fraction=0.0 must be in \(0, 1\)"),
        (dict(selection="holdout", holdout_fraction=1.0), r"holdout_fraction=1.0 must be in \(0, 1\)"),
        (
            dict(selection="holdout", holdout_fraction=float("nan")),
            r"holdout_fraction=nan must be in \(0, 1\)",
        ),
        (dict(selection="kfold", n_folds=1), r"n_folds=1 must be an integer >= 2"),
        (
            dict(selection="kfold", n_folds=10),
            r"needs at least n_folds=10 training points, got n_samples=6; use n_folds <= 6 or "
            r"selection='gcv'",
        ),
        (dict(selection="holdout", holdout_fraction=0.05), r"each part needs at least one"),
    ],
)
def test_bad_selection_settings_are_one_line_errors_naming_the_parameter(params, match):
    X, y, _, _ = _data(K=6)
    with pytest.raises(ValueError, match=match) as info:
        KernelSelfDistillation(gamma=1.0, epsilon=0.05, n_rounds="auto", **params).fit(X, y)
    assert "\n" not in str(info.value)


def test_split_indices_partition_the_data():
    folds = split_indices(23, "kfold", n_folds=4, random_state=0)
    held = np.sort(np.concatenate([h for _, h in folds]))
    np.testing.assert_array_equal(held, np.arange(23))
    ((train, held),) = split_indices(20, "holdout", holdout_fraction=0.25, random_state=0)
    assert len(held) == 5 and len(np.intersect1d(train, held)) == 0
