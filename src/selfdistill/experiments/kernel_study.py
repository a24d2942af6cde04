"""Is self-distillation worth it? Kernel self-distillation against tuned spectral baselines, and choosing
the round without the test set. One command, minutes on a CPU::

    selfdistill study --out results/kernel_study

Per dataset, label-noise level and seed (a seed draws the subset and the train/validation/test split, the
same at every noise level, and the label noise), one eigendecomposition of the training kernel matrix serves
every method (:mod:`selfdistill.kernel.filters`); each method's own hyperparameter is tuned on the SAME
validation split, and its test error reported:

``sd``
    Self-distillation (Mobahi et al. 2020), eps-constrained: eps and round chosen on validation
    (``eps = e_min + f (||y||^2/K - e_min)``, f on a 48-point log grid from 1e-7 to 0.9; e_min the
    unreachable null-space part; at most 60 rounds).
``sd_oracle``
    The same chain (eps as chosen on validation), round chosen on the TEST set: a reference only.
``sd_default``
    The estimator's default eps (f = 0.1), round chosen on validation.
``mix_1step``
    One student with ground-truth mixing: KernelRidge teacher with alpha on the ridge grid, the
    closed-form validation-optimal xi (:mod:`selfdistill.kernel.mixing`), alpha chosen on validation.
``ridge``
    Kernel ridge, ``c = alpha / K`` on a 57-point log grid from 1e-12 to 10 times d_max.
``gd``
    Gradient descent in the RKHS, ``eta = 1 / d_max``, the number of steps (80-point log grid up to 1e12;
    closed form, so large counts cost nothing).
``boosting``
    L2-boosting with a weak KernelRidge base learner (``c = d_max``, i.e. ``alpha = K d_max``), the number
    of fits (the same grid).
``cutoff``
    Spectral cut-off, the number of leading eigen-directions.

Separately, the round chosen WITHOUT validation data (gcv, holdout, kfold on the training split, with
``KernelSelfDistillation(n_rounds="auto")``) against the oracle (test-best) round, at f = 0.1 and
f = 0.01.

Datasets (all offline): section4 (the paper's 11 points x = 0..1, spline Green's function (59), labels
``sin(2 pi x) + N(0, sigma^2)``, validation: 11 fresh points, test: ``sin(2 pi x)`` on 1001 points),
diabetes (scikit-learn), co2, sunspots, fair, randhie (statsmodels), digits (one-hot, 10 outputs). Real
data: a random subset of at most ``--n-max`` points per seed, split 50/25/25 into train/validation/test,
features standardized on the training split, RBF kernel with gamma = scale / median squared distance
(scale fixed per dataset once, from ridge validation error on seed 0, before any comparison), labels
standardized on the training split (MSE in units of the training label variance). Noise: Gaussian,
sigma = level * std(y) added to train and validation labels (test labels are the originals); digits: a
fraction of training and validation labels replaced by a uniformly random class.

Writes ``runs.csv`` (one row per dataset, noise, seed, method), ``summary.csv`` (mean and std over seeds),
``paired.csv`` (paired differences a - b with a 95% t interval and a verdict), ``selection.csv`` and
``selection_summary.csv``, ``section4_paper.csv`` (the paper's exact labels), and ``study.png``,
``paired.png``, ``selection.png``. Finished (dataset, noise, seed) units are kept in ``runs.csv``: rerun
the same command to resume.
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import RunFolder, atomic_save_figure, atomic_write_csv, atomic_write_json
from selfdistill.stats import paired_difference

METHODS = ("sd", "sd_oracle", "sd_default", "mix_1step", "ridge", "gd", "boosting", "cutoff")
BASELINES = ("ridge", "gd", "boosting", "cutoff", "sd_default", "mix_1step")
#: paired comparisons (a, b): test MSE of a minus b, per seed
PAIRS = tuple(("sd", b) for b in BASELINES) + (("sd_default", "ridge"), ("mix_1step", "ridge"))
EPS_FRACTIONS = np.geomspace(1e-7, 0.9, 48)  # about as dense (log scale) as the ridge grid
DEFAULT_FRACTION = 0.1  # KernelSelfDistillation's default epsilon (selfdistill.kernel.estimator)
SELECTION_FRACTIONS = (0.1, 0.01)
MAX_ROUNDS = 60
RIDGE_GRID = np.geomspace(10.0, 1e-12, 57)  # c / d_max: every grid reaches interpolation
LARGE_STEPS = 10**12
STEP_GRID = 80


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the study: its noise model and levels and its kernel (the entries of ``DATASETS``)."""

    name: str
    noise_kind: str  # "gaussian" (sigma = level * std(y)), "absolute" (sigma = level), "flip" (fraction)
    noise_levels: tuple[float, ...]
    gamma_scale: float | None  # RBF gamma = scale / median squared distance; None: the spline kernel
    description: str


#: the study's datasets by name (all offline): noise kind and levels, RBF gamma scale (None: spline kernel)
DATASETS: dict[str, DatasetSpec] = {
    "section4": DatasetSpec("section4", "absolute", (0.25, 0.5, 1.0), None, "Mobahi et al. Section 4"),
    "diabetes": DatasetSpec("diabetes", "gaussian", (0.0, 0.5, 1.0), 1.0, "scikit-learn diabetes"),
    "co2": DatasetSpec("co2", "gaussian", (0.0, 0.5, 1.0), 100.0, "statsmodels co2 (time -> ppm)"),
    "sunspots": DatasetSpec("sunspots", "gaussian", (0.0, 0.5, 1.0), 1000.0, "statsmodels sunspots"),
    "fair": DatasetSpec("fair", "gaussian", (0.0, 0.5, 1.0), 1.0, "statsmodels fair (affairs)"),
    "randhie": DatasetSpec("randhie", "gaussian", (0.0, 0.5, 1.0), 1.0, "statsmodels randhie (mdvis)"),
    "digits": DatasetSpec("digits", "flip", (0.0, 0.2, 0.4), 1.0, "scikit-learn digits, one-hot"),
}


# ---- data ------------------------------------------------------------------------------------------------


def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a real dataset, before subsampling; y is 1-D (digits: the class labels)."""
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        return load_diabetes(return_X_y=True)
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return X.astype(float), y
    try:
        import statsmodels.api as sm
    except ImportError:
        raise ValueError(
            f"dataset {name!r} ships with statsmodels, which is not installed: pip install "
            "'selfdistill[study]' (or statsmodels), or leave it out of --datasets"
        ) from None

    if name == "co2":
        data = sm.datasets.co2.load_pandas().data.dropna()
        t = data.index.year + (data.index.day_of_year - 1) / 365.25
        return np.asarray(t, dtype=float)[:, None], data["co2"].to_numpy(float)
    if name == "sunspots":
        data = sm.datasets.sunspots.load_pandas().data
        return data[["YEAR"]].to_numpy(float), data["SUNACTIVITY"].to_numpy(float)
    if name in ("fair", "randhie"):
        dataset = getattr(sm.datasets, name).load_pandas()
        target = "affairs" if name == "fair" else "mdvis"
        return dataset.data.drop(columns=target).to_numpy(float), dataset.data[target].to_numpy(float)
    raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


@dataclass
class Split:
    """One seed's train / validation / test data with its kernel matrices (raw, no 1/K)."""

    gram: np.ndarray
    k_val: np.ndarray
    k_test: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    X_train: np.ndarray
    kernel: str
    gamma: float | None
    classes: bool = False  # digits: also report accuracy (argmax of the centred one-hot + offset)
    offset: np.ndarray | None = None  # the training mean added back for accuracy


def _rbf_gamma(X: np.ndarray, scale: float) -> float:
    from sklearn.metrics.pairwise import euclidean_distances

    sq = euclidean_distances(X, squared=True)
    med = float(np.median(sq[np.triu_indices_from(sq, k=1)]))
    return scale / med if med > 0 else scale


def make_split(name: str, level: float, seed: int, n_max: int) -> Split:
    """The data of one (dataset, noise level, seed): the seed draws the subset and the split (the same at
    every noise level) and the noise (its own draw per level)."""
    from selfdistill.experiments.kernel_figures import PAPER_X
    from selfdistill.kernel import kernel_matrix

    spec = DATASETS[name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])  # subset and split: the same at every level
    noise_rng = np.random.default_rng([seed, sum(map(ord, name)), 1 + int(round(level * 1000))])
    if name == "section4":
        x_val = np.sort(rng.uniform(0, 1, PAPER_X.size))
        x_test = np.linspace(0, 1, 1001)
        y_train = np.sin(2 * np.pi * PAPER_X) + level * noise_rng.normal(size=PAPER_X.size)
        y_val = np.sin(2 * np.pi * x_val) + level * noise_rng.normal(size=x_val.size)
        col = PAPER_X[:, None]
        return Split(
            kernel_matrix(col, kernel="spline"), kernel_matrix(x_val[:, None], col, kernel="spline"),
            kernel_matrix(x_test[:, None], col, kernel="spline"), y_train, y_val, np.sin(2 * np.pi * x_test),
            col, "spline", None,
        )  # fmt: skip
    X, y = load_raw(name)
    idx = rng.permutation(len(y))[: min(n_max, len(y))]
    X, y = X[idx], y[idx]
    n = len(y)
    tr, va, te = np.arange(n // 2), np.arange(n // 2, (3 * n) // 4), np.arange((3 * n) // 4, n)
    mean, std = X[tr].mean(axis=0), X[tr].std(axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    classes = spec.noise_kind == "flip"
    if classes:
        labels = y.astype(int).copy()
        noisy = labels.copy()
        for part in (tr, va):
            flip = part[noise_rng.uniform(size=part.size) < level]
            noisy[flip] = noise_rng.integers(0, 10, size=flip.size)
        onehot, noisy_onehot = np.eye(10)[labels], np.eye(10)[noisy]
        offset = noisy_onehot[tr].mean(axis=0)
        y_all, y_noisy = onehot - offset, noisy_onehot - offset
    else:
        offset = None
        y_all = (y - y[tr].mean()) / y[tr].std()
        y_noisy = y_all.copy()
        y_noisy[np.r_[tr, va]] += level * noise_rng.normal(size=tr.size + va.size)
    gamma = _rbf_gamma(X[tr], spec.gamma_scale)
    return Split(
        kernel_matrix(X[tr], kernel="rbf", gamma=gamma),
        kernel_matrix(X[va], X[tr], kernel="rbf", gamma=gamma),
        kernel_matrix(X[te], X[tr], kernel="rbf", gamma=gamma), y_noisy[tr], y_noisy[va], y_all[te], X[tr],
        "rbf", gamma, classes, offset,
    )  # fmt: skip


# ---- one unit: every method on one split -----------------------------------------------------------------


def _mse(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over points of the squared error summed over outputs; pred (S, n[, m]) -> (S,)."""
    err = pred.reshape(pred.shape[0], len(y), -1) - y.reshape(1, len(y), -1)
    return np.sum(err**2, axis=2).mean(axis=1)


def _accuracy(pred: np.ndarray, split: Split) -> float:
    if not split.classes:
        return float("nan")
    return float(
        np.mean(np.argmax(pred + split.offset, axis=1) == np.argmax(split.y_test + split.offset, axis=1))
    )


def _eps_for_fraction(spectrum: Any, y: np.ndarray, fraction: float) -> float:
    """eps = e_min + f (||y||^2 / K - e_min): the estimator's default convention with f in place of 0.1."""
    Y = y.reshape(spectrum.n_samples, -1)
    K = spectrum.n_samples
    unreachable = float(np.sum(spectrum.rotate(Y)[spectrum.null_mask] ** 2)) / K
    return unreachable + fraction * (float(np.sum(Y * Y)) / K - unreachable)


def _path_scores(path: Any, split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    val = path.test_predictions(split.k_val)
    test = path.test_predictions(split.k_test)
    return _mse(val, split.y_val), _mse(test, split.y_test), test


def run_unit(name: str, level: float, seed: int, n_max: int) -> tuple[list[dict], list[dict]]:
    """Every method on one (dataset, noise, seed): rows of runs.csv and of selection.csv."""
    from selfdistill.kernel import (
        KernelSelfDistillation,
        Spectrum,
        boosting_path,
        cutoff_path,
        gradient_descent_path,
        ridge_path,
        self_distillation_path,
    )
    from selfdistill.kernel.filters import geometric_steps
    from selfdistill.kernel.mixing import optimal_mixing_chain

    split = make_split(name, level, seed, n_max)
    spectrum = Spectrum.from_gram(split.gram, driver="evd")  # evd: robust with many repeated eigenvalues
    K, d_max = spectrum.n_samples, float(spectrum.eigenvalues[-1])
    base = {"dataset": name, "noise": level, "seed": seed, "n_train": K}
    rows: list[dict] = []

    def add(method: str, param: str, val_mse: float, test_mse: float, pred: np.ndarray, edge: bool) -> None:
        rows.append({**base, "method": method, "param": param, "val_mse": float(val_mse),
                     "test_mse": float(test_mse), "test_accuracy": _accuracy(pred, split),
                     "at_grid_edge": bool(edge)})  # fmt: skip

    def tuned(method: str, path: Any, describe: Callable[[int], str]) -> None:
        val, test, pred = _path_scores(path, split)
        s = int(np.argmin(val))
        add(method, describe(s), val[s], test[s], pred[s], s in (0, path.n_steps - 1))

    alphas = K * d_max * RIDGE_GRID
    ridge = ridge_path(spectrum, split.y_train, alphas)
    tuned("ridge", ridge, lambda s: f"alpha={alphas[s]:.4g}")
    gd_steps = geometric_steps(LARGE_STEPS, STEP_GRID)
    tuned(
        "gd", gradient_descent_path(spectrum, split.y_train, gd_steps), lambda s: f"steps={gd_steps[s]:.0f}"
    )
    boost = boosting_path(spectrum, split.y_train, K * d_max, steps=gd_steps)  # weak learner: c = d_max
    tuned("boosting", boost, lambda s: f"fits={gd_steps[s]:.0f}")
    cut = cutoff_path(spectrum, split.y_train)
    tuned("cutoff", cut, lambda s: f"n_components={cut.params[s]:.0f}")

    # one-step mixing: teacher KernelRidge(alpha), student on xi* teacher + (1 - xi*) y, xi* closed form on
    # the validation split; alpha chosen on validation
    best = None
    for alpha in alphas:
        chain = optimal_mixing_chain(spectrum, split.y_train, alpha, 2, split.k_val, split.y_val)
        val = _mse(chain.predict(split.k_val, round=1)[None], split.y_val)[0]
        if best is None or val < best[0]:
            best = (val, alpha, chain)
    val, alpha, chain = best
    pred = chain.predict(split.k_test, round=1)
    param = f"alpha={alpha:.4g} xi={chain.xi_rounds[1]:.3f}"
    edge = alpha in (alphas[0], alphas[-1])
    add("mix_1step", param, val, _mse(pred[None], split.y_test)[0], pred, edge)

    # self-distillation over the eps grid: (eps, round) on validation; oracle round for the chosen eps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chains that reach max_rounds without collapse
        chains = []
        for f in EPS_FRACTIONS:
            eps = _eps_for_fraction(spectrum, split.y_train, f)
            path = self_distillation_path(spectrum, split.y_train, eps, max_rounds=MAX_ROUNDS)
            chains.append((f, path) + _path_scores(path, split))
    f_i, t_i = min(
        ((i, int(np.argmin(c[2]))) for i, c in enumerate(chains)), key=lambda it: chains[it[0]][2][it[1]]
    )
    f, path, val, test, pred = chains[f_i]
    edge = f_i in (0, len(chains) - 1)
    add("sd", f"f={f:.3g} round={t_i}/{path.n_steps}", val[t_i], test[t_i], pred[t_i], edge)
    t_o = int(np.argmin(test))
    add("sd_oracle", f"f={f:.3g} round={t_o}/{path.n_steps}", val[t_o], test[t_o], pred[t_o], edge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps = _eps_for_fraction(spectrum, split.y_train, DEFAULT_FRACTION)
        default = self_distillation_path(spectrum, split.y_train, eps, max_rounds=MAX_ROUNDS)
    val, test, pred = _path_scores(default, split)
    t_d = int(np.argmin(val))
    add("sd_default", f"f=0.1 round={t_d}/{default.n_steps}", val[t_d], test[t_d], pred[t_d], False)

    # choosing the round without validation data, against the oracle round
    selection_rows = []
    X_fit = split.gram  # precomputed kernel: holdout/kfold slice it
    for f in SELECTION_FRACTIONS:
        eps = _eps_for_fraction(spectrum, split.y_train, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = self_distillation_path(spectrum, split.y_train, eps, max_rounds=MAX_ROUNDS)
        test = _mse(full.test_predictions(split.k_test), split.y_test)
        oracle = int(np.argmin(test))
        for criterion in ("gcv", "holdout", "kfold"):
            est = KernelSelfDistillation(
                kernel="precomputed", epsilon=eps, n_rounds="auto", selection=criterion,
                max_rounds=MAX_ROUNDS,
                random_state=seed,
            )  # fmt: skip
            chosen, note = -1, ""
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(X_fit, split.y_train)
                chosen = est.n_rounds_ - 1
            except ValueError as err:  # e.g. infeasible on a training part (singular spline kernel)
                note = _short(err)
            selection_rows.append({
                **base, "fraction": f, "criterion": criterion, "n_rounds": full.n_steps,
                "chosen_round": chosen, "oracle_round": oracle,
                "test_mse_chosen": float(test[chosen]) if chosen >= 0 else float("nan"),
                "test_mse_oracle": float(test[oracle]), "test_mse_round0": float(test[0]), "note": note,
            })  # fmt: skip
    return rows, selection_rows


def _short(err: Exception) -> str:
    text = str(err)
    return "infeasible on a training part (null space of G)" if "infeasible" in text else text[:160]


# ---- aggregation -----------------------------------------------------------------------------------------

RUN_COLUMNS = [
    "dataset",
    "noise",
    "seed",
    "n_train",
    "method",
    "param",
    "val_mse",
    "test_mse",
    "test_accuracy",
    "at_grid_edge",
]
SELECTION_COLUMNS = [
    "dataset", "noise", "seed", "n_train", "fraction", "criterion", "n_rounds", "chosen_round",
    "oracle_round",
    "test_mse_chosen", "test_mse_oracle", "test_mse_round0", "note",
]  # fmt: skip


def verdict(lower: float, upper: float) -> str:
    """For a difference a - b of test MSEs: "wins" (a better) if the 95% interval is below zero, "loses"
    if above, else "tie" (the interval contains zero)."""
    if not np.isfinite(lower):
        return "n/a"
    if upper < 0:
        return "wins"
    if lower > 0:
        return "loses"
    return "tie"


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def summarize(rows: list[dict]) -> list[dict]:
    """Per dataset, noise and method: mean and std over seeds of the test MSE (rows of ``summary.csv``)."""
    out = []
    for (dataset, noise, method), group in _groups(rows, ("dataset", "noise", "method")).items():
        mse = np.array([r["test_mse"] for r in group])
        acc = np.array([r["test_accuracy"] for r in group], dtype=float)
        out.append({
            "dataset": dataset, "noise": noise, "method": method, "n_seeds": len(group),
            "test_mse_mean": float(mse.mean()),
            "test_mse_std": float(mse.std(ddof=1)) if len(mse) > 1 else 0.0,
            "test_accuracy_mean": float(np.mean(acc)) if np.all(np.isfinite(acc)) else float("nan"),
            "n_at_grid_edge": sum(r["at_grid_edge"] in (True, "True") for r in group),
        })  # fmt: skip
    return out


def paired(rows: list[dict], pairs: tuple[tuple[str, str], ...] = PAIRS) -> list[dict]:
    """Per dataset and noise: test MSE of a minus b for each pair (a, b), paired by seed."""
    out = []
    for (dataset, noise), group in _groups(rows, ("dataset", "noise")).items():
        by_method = {
            m: {r["seed"]: r["test_mse"] for r in g} for (m,), g in _groups(group, ("method",)).items()
        }
        for reference, other in pairs:
            seeds = sorted(set(by_method.get(reference, {})) & set(by_method.get(other, {})))
            if not seeds:
                continue
            diff = paired_difference(  # the package's one paired t interval (selfdistill.stats)
                [by_method[reference][s] for s in seeds], [by_method[other][s] for s in seeds]
            )
            mean, lo, hi = diff.mean, diff.ci_low, diff.ci_high
            out.append({
                "dataset": dataset, "noise": noise, "comparison": f"{reference} - {other}",
                "n_seeds": len(seeds),
                "mean_difference": mean, "std_difference": diff.std if diff.n > 1 else 0.0,
                "ci95_low": lo, "ci95_high": hi,
                "relative_difference": mean / float(np.mean([by_method[other][s] for s in seeds])),
                "verdict": verdict(lo, hi),
            })  # fmt: skip
    return out


def summarize_selection(
    rows: list[dict], keys: tuple[str, ...] = ("dataset", "noise", "fraction", "criterion")
) -> list[dict]:
    """Per group: how often each criterion finds the oracle round, and the test-MSE ratio chosen / oracle."""
    out = []
    for values, group in _groups(rows, keys).items():
        ok = [r for r in group if r["chosen_round"] >= 0]
        regret = np.array([r["test_mse_chosen"] / r["test_mse_oracle"] for r in ok])
        hits = np.array([r["chosen_round"] == r["oracle_round"] for r in ok])
        dist = np.array([abs(r["chosen_round"] - r["oracle_round"]) for r in ok])
        out.append({
            **dict(zip(keys, values, strict=True)), "n_runs": len(group),
            "n_failed": len(group) - len(ok), "exact_round_rate": float(hits.mean()) if ok else float("nan"),
            "mean_abs_round_error": float(dist.mean()) if ok else float("nan"),
            "median_test_mse_ratio_to_oracle": float(np.median(regret)) if ok else float("nan"),
            "mean_test_mse_ratio_to_oracle": float(np.mean(regret)) if ok else float("nan"),
            "mean_oracle_round": float(np.mean([r["oracle_round"] for r in group])),
            "mean_n_rounds": float(np.mean([r["n_rounds"] for r in group])),
        })  # fmt: skip
    return out


def section4_paper_selection() -> list[dict]:
    """The paper's exact 11 labels (eps = 0.05) and the interior variant (eps = 0.01): each criterion's round
    against the oracle round (test MSE against sin(2 pi x) on 1001 points)."""
    from selfdistill.experiments.kernel_figures import PAPER_LABELS, PAPER_X, run_variant
    from selfdistill.kernel import KernelSelfDistillation

    out = []
    variants = [("paper", PAPER_X, PAPER_LABELS, 0.05), ("interior", PAPER_X[1:-1], PAPER_LABELS[1:-1], 0.01)]
    for variant, x, y, eps in variants:
        run = run_variant(variant, variant, x, y, eps)
        for criterion in ("gcv", "holdout", "kfold"):
            est = KernelSelfDistillation(
                kernel="spline", epsilon=eps, n_rounds="auto", selection=criterion, random_state=0
            )
            chosen, note = -1, ""
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(x[:, None], y)
                chosen = est.n_rounds_ - 1
            except ValueError as err:
                note = _short(err)
            out.append({
                "variant": variant, "epsilon": eps, "criterion": criterion, "n_rounds": run.chain.n_rounds,
                "chosen_round": chosen, "oracle_round": run.best_round,
                "test_mse_chosen": float(run.test_mse[chosen]) if chosen >= 0 else float("nan"),
                "test_mse_oracle": float(run.test_mse[run.best_round]),
                "scores": " ".join(f"{s:.4g}" for s in est.selection_.scores) if chosen >= 0 else "",
                "note": note,
            })  # fmt: skip
    return out


# ---- plots -----------------------------------------------------------------------------------------------

PLOT_METHODS = ("sd", "sd_oracle", "sd_default", "mix_1step", "ridge", "gd", "boosting", "cutoff")


def plot_study(summary: list[dict], datasets: list[str]) -> Any:
    """``study.png``: test MSE per method and noise level (mean +- std over seeds), one panel per dataset."""
    from matplotlib.figure import Figure

    cols = min(4, len(datasets))
    rows_n = int(np.ceil(len(datasets) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows_n), layout="constrained")
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    for ax, dataset in zip(axes, datasets, strict=False):
        entries = [r for r in summary if r["dataset"] == dataset]
        noises = sorted({r["noise"] for r in entries})
        width = 0.8 / len(PLOT_METHODS)
        for j, method in enumerate(PLOT_METHODS):
            values = [
                next((r for r in entries if r["noise"] == n and r["method"] == method), None) for n in noises
            ]
            x = np.arange(len(noises)) + (j - len(PLOT_METHODS) / 2 + 0.5) * width
            ax.bar(
                x, [v["test_mse_mean"] if v else np.nan for v in values], width,
                yerr=[v["test_mse_std"] if v else np.nan for v in values], label=method, capsize=1.5,
                hatch="//" if method == "sd_oracle" else None,
            )  # fmt: skip
        ax.set_xticks(np.arange(len(noises)), [f"{n:g}" for n in noises])
        ax.set_xlabel("label noise level")
        ax.set_ylabel("test MSE (mean +- std over seeds)")
        ax.set_title(dataset)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small", ncol=2)
    fig.suptitle("test error per method, each tuned on the same validation data (sd_oracle: round on test)")
    return fig


def plot_paired(pairs: list[dict], datasets: list[str]) -> Any:
    """``paired.png``: the paired differences of :func:`paired` with their 95% t intervals, one panel per
    comparison (green: the left method wins, red: it loses)."""
    from matplotlib.figure import Figure

    comparisons = [c for c in (f"{a} - {b}" for a, b in PAIRS) if any(p["comparison"] == c for p in pairs)]
    n_cells = len({(p["dataset"], p["noise"]) for p in pairs})
    cols = min(4, len(comparisons))
    rows_n = int(np.ceil(len(comparisons) / cols))
    fig = Figure(figsize=(4.0 * cols, rows_n * (0.2 * n_cells + 1.6)), layout="constrained")
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    for ax in axes[len(comparisons) :]:
        ax.set_visible(False)
    for ax, comparison in zip(axes, comparisons, strict=False):
        entries = [p for p in pairs if p["comparison"] == comparison]
        labels, mean, lo, hi, colors = [], [], [], [], []
        for dataset in datasets:
            for p in sorted((e for e in entries if e["dataset"] == dataset), key=lambda e: e["noise"]):
                labels.append(f"{dataset} {p['noise']:g}")
                scale = p["mean_difference"] / p["relative_difference"] if p["relative_difference"] else 1.0
                mean.append(p["mean_difference"] / scale)
                lo.append(p["ci95_low"] / scale)
                hi.append(p["ci95_high"] / scale)
                colors.append({"wins": "tab:green", "loses": "tab:red"}.get(p["verdict"], "0.4"))
        y = np.arange(len(labels))[::-1]
        mean, lo, hi = map(np.asarray, (mean, lo, hi))
        for yi, m, low, high, color in zip(y, mean, lo, hi, colors, strict=True):
            ax.errorbar(m, yi, xerr=[[m - low], [high - m]], fmt="o", color=color, ms=3.5, capsize=2)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, labels, fontsize="x-small")
        ax.set_xlabel("paired difference / baseline mean (95% t interval)")
        ax.set_title(comparison + "\n(< 0: the left method is better)", fontsize="small")
    fig.suptitle("paired test-MSE differences over seeds, 95% t intervals (green: left wins, red: loses)")
    return fig


def plot_selection(summary: list[dict], datasets: list[str]) -> Any:
    """``selection.png``: per criterion (gcv, holdout, kfold), how often it picks the oracle round and its
    mean test-MSE ratio to the oracle round (:func:`summarize_selection`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 6.5), layout="constrained")
    axes = fig.subplots(2, len(SELECTION_FRACTIONS), squeeze=False)
    panels = (
        ("exact_round_rate", "share of runs choosing the oracle round"),
        ("mean_test_mse_ratio_to_oracle", "mean test MSE ratio: chosen / oracle round"),
    )
    for row, (key, label) in enumerate(panels):
        for col, fraction in enumerate(SELECTION_FRACTIONS):
            ax = axes[row, col]
            width = 0.25
            for j, criterion in enumerate(("gcv", "holdout", "kfold")):
                values = []
                for dataset in datasets:
                    hit = [r for r in summary if r["dataset"] == dataset and r["fraction"] == fraction
                           and r["criterion"] == criterion]  # fmt: skip
                    values.append(hit[0][key] if hit else np.nan)
                ax.bar(np.arange(len(datasets)) + (j - 1) * width, values, width, label=criterion)
            if row == 1:
                ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(datasets)), datasets, rotation=30, fontsize="small")
            ax.set_ylabel(label, fontsize="small")
            ax.set_title(f"eps fraction f = {fraction:g}", fontsize="small")
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(
        "choosing the round on the training split only (no validation data), all noise levels and seeds"
    )
    return fig


# ---- command line ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results/kernel_study"), help="output folder")
    parser.add_argument(
        "--seeds", type=int, default=10, help="seeds per dataset and noise level (default 10)"
    )
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {', '.join(DATASETS)}"
    )
    parser.add_argument("--n-max", type=int, default=600, help="points per seed for the real datasets (600)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, n-max 120: a smoke test (seconds)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads (default 1: small matrices, shared CPUs)"
    )


def _read_rows(path: Path, columns: list[str]) -> list[dict]:
    if not path.exists():
        return []
    numeric = {"noise", "val_mse", "test_mse", "test_accuracy", "fraction", "test_mse_chosen",
               "test_mse_oracle",
               "test_mse_round0"}  # fmt: skip
    integer = {"seed", "n_train", "n_rounds", "chosen_round", "oracle_round"}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and list(rows[0]) != columns:
        return []
    return [
        {k: float(v) if k in numeric else int(v) if k in integer else v for k, v in row.items()}
        for row in rows
    ]


def main(args: argparse.Namespace) -> int:
    """``selfdistill study``: run (or resume) the study into ``args.out`` (see the module docstring).

    ``args`` holds the options of ``add_arguments``: ``out``, ``seeds``, ``datasets`` (comma-separated),
    ``n_max``, ``quick``, ``no_plots``, ``threads``. The folder is owned by one run at a time
    (:class:`selfdistill.io.RunFolder`). Returns the exit status (0).
    """
    datasets = [d.strip() for d in str(args.datasets).split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise ValueError(
            f"--datasets: unknown {unknown}; use a comma-separated subset of {', '.join(DATASETS)}"
        )
    seeds = 2 if args.quick else int(args.seeds)
    n_max = 120 if args.quick else int(args.n_max)
    if seeds < 2:
        raise ValueError(f"--seeds {seeds}: paired intervals need at least 2 seeds; use --seeds 10")
    if n_max < 20:
        raise ValueError(f"--n-max {n_max}: too few points for a 50/25/25 split; use --n-max 600")
    with RunFolder(args.out):  # one run at a time per folder (a second one is refused, one line)
        return _run(args, datasets, seeds, n_max)


def _run(args: argparse.Namespace, datasets: list[str], seeds: int, n_max: int) -> int:
    out: Path = args.out
    config = {"datasets": datasets, "seeds": seeds, "n_max": n_max, "eps_fractions": EPS_FRACTIONS,
              "max_rounds": MAX_ROUNDS, "ridge_grid": RIDGE_GRID, "max_steps": LARGE_STEPS,
              "step_grid": STEP_GRID}  # fmt: skip
    config_path = out / "config.json"
    runs_path, sel_path = out / "runs.csv", out / "selection.csv"
    import json

    same = config_path.exists() and json.loads(config_path.read_text()) == json.loads(
        json.dumps(config, default=lambda a: np.asarray(a).tolist())
    )
    rows = _read_rows(runs_path, RUN_COLUMNS) if same else []
    sel_rows = _read_rows(sel_path, SELECTION_COLUMNS) if same else []
    done = {(r["dataset"], r["noise"], r["seed"]) for r in rows} & {
        (r["dataset"], r["noise"], r["seed"]) for r in sel_rows
    }
    rows = [r for r in rows if (r["dataset"], r["noise"], r["seed"]) in done]
    sel_rows = [r for r in sel_rows if (r["dataset"], r["noise"], r["seed"]) in done]
    atomic_write_json(config_path, config)
    import scipy.linalg  # noqa: F401  (load the BLAS libraries first: threadpoolctl limits loaded ones only)
    import sklearn.metrics.pairwise  # noqa: F401
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(limits=max(int(args.threads), 1))
    started = time.perf_counter()
    units = [(d, level, s) for d in datasets for level in DATASETS[d].noise_levels for s in range(seeds)]
    for i, (dataset, level, seed) in enumerate(units):
        if (dataset, level, seed) in done:
            continue
        unit_rows, unit_sel = run_unit(dataset, level, seed, n_max)
        rows += unit_rows
        sel_rows += unit_sel
        atomic_write_csv(runs_path, rows, RUN_COLUMNS)
        atomic_write_csv(sel_path, sel_rows, SELECTION_COLUMNS)
        print(
            f"[{i + 1}/{len(units)}] {dataset} noise={level:g} seed={seed} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    summary, pairs, sel_summary = summarize(rows), paired(rows), summarize_selection(sel_rows)
    sel_overall = summarize_selection(sel_rows, ("dataset", "fraction", "criterion"))
    atomic_write_csv(out / "summary.csv", summary, list(summary[0]))
    atomic_write_csv(out / "paired.csv", pairs, list(pairs[0]))
    atomic_write_csv(out / "selection_summary.csv", sel_summary, list(sel_summary[0]))
    if "section4" in datasets:
        paper = section4_paper_selection()
        atomic_write_csv(out / "section4_paper.csv", paper, list(paper[0]))
    if not args.no_plots:
        atomic_save_figure(plot_study(summary, datasets), out / "study.png")
        atomic_save_figure(plot_paired(pairs, datasets), out / "paired.png")
        atomic_save_figure(plot_selection(sel_overall, datasets), out / "selection.png")
    print(format_headline(pairs, sel_overall))
    print(f"results written to {out} ({time.perf_counter() - started:.0f} s)")
    limiter.restore_original_limits()
    return 0


def format_headline(pairs: list[dict], sel_summary: list[dict]) -> str:
    """Counts of wins, ties and losses per comparison, and the selection regret per criterion."""
    lines = ["paired test-MSE differences a - b over seeds (95% t interval): a wins / ties / loses"]
    for a, b in PAIRS:
        verdicts = [p["verdict"] for p in pairs if p["comparison"] == f"{a} - {b}"]
        lines.append(
            f"  {a + ' - ' + b:>22}: wins {verdicts.count('wins')}, ties {verdicts.count('tie')}, "
            f"losses {verdicts.count('loses')} (of {len(verdicts)} dataset x noise cells)"
        )
    lines.append(
        "choosing the round on the training split: share choosing the oracle round, mean test-MSE ratio"
    )
    for criterion in ("gcv", "holdout", "kfold"):
        rows = [r for r in sel_summary if r["criterion"] == criterion]
        runs = sum(r["n_runs"] - r["n_failed"] for r in rows)
        exact = sum(
            r["exact_round_rate"] * (r["n_runs"] - r["n_failed"]) for r in rows if r["n_runs"] > r["n_failed"]
        )
        ratio = sum(
            r["mean_test_mse_ratio_to_oracle"] * (r["n_runs"] - r["n_failed"])
            for r in rows
            if r["n_runs"] > r["n_failed"]
        )
        failed = sum(r["n_failed"] for r in rows)
        lines.append(
            f"  {criterion:>8}: oracle round in {exact / max(runs, 1):.0%} of {runs} runs, mean ratio "
            f"{ratio / max(runs, 1):.3f} ({failed} runs could not refit the chain on a training part)"
        )
    return "\n".join(lines)
