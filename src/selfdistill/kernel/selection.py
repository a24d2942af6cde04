"""Choosing the round (or any spectral method's step) without the test set.

Three criteria, each a score per candidate step (lower is better; ties go to the earlier step):

``"gcv"``
    Generalized cross-validation from the filter's trace (``FilterPath.gcv``), no refits:
    ``(1/K) ||f_s(X) - y||^2 / (1 - tr(h_s)/K)^2`` (Craven & Wahba 1979). Exactly rotation-invariant
    leave-one-out for linear smoothers; for the eps-constrained chain, whose c_t depends on the labels,
    the plug-in value with the c_t found on the data.
``"holdout"``
    Refit the SAME estimator (a clone: same epsilon / alpha / xi / kernel settings) on a random
    ``(1 - holdout_fraction)`` part of the training data; score each step by the mean squared error on the
    held-out part. For the eps-constrained chain the refit chain has its own c_t, found on the training
    part; a refit chain that collapses before the last candidate round predicts 0 from its collapse on
    (that is the solution of eq. 1 there).
``"kfold"``
    The same over ``n_folds`` folds (shuffled, ``random_state``); the score is the mean squared error over
    all held-out points.

Mean squared errors are summed over output columns, as the chain's train MSE is.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import atomic_write_csv, atomic_write_json, to_jsonable

#: selection criteria, the default first.
SELECTIONS = ("gcv", "holdout", "kfold")


def check_n_rounds(n_rounds: Any) -> int | str | None:
    """n_rounds must be a positive integer, None (until collapse) or "auto" (select the round)."""
    if n_rounds is None or (isinstance(n_rounds, str) and n_rounds == "auto"):
        return n_rounds
    if (
        isinstance(n_rounds, bool | str)
        or not isinstance(n_rounds, int | np.integer | float)
        or (int(n_rounds) != n_rounds or n_rounds < 1)
    ):
        raise ValueError(
            f"n_rounds must be a positive integer, None (until collapse) or 'auto' (choose the round with "
            f"`selection`), got {n_rounds!r}"
        )
    return int(n_rounds)


def check_selection(selection: Any, n_folds: Any, holdout_fraction: Any) -> None:
    """One-line errors for an unknown criterion, a bad fold count, a holdout fraction outside (0, 1)."""
    if not isinstance(selection, str) or selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is unknown; use one of {', '.join(map(repr, SELECTIONS))}")
    if selection == "kfold" and (
        isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2
    ):
        raise ValueError(f"n_folds={n_folds!r} must be an integer >= 2 for selection='kfold'; e.g. n_folds=5")
    if selection == "holdout":
        try:
            fraction = float(holdout_fraction)
        except (TypeError, ValueError):
            fraction = float("nan")
        if isinstance(holdout_fraction, bool) or not 0.0 < fraction < 1.0:
            raise ValueError(
                f"holdout_fraction={holdout_fraction!r} must be in (0, 1) (the share of the training data "
                "held out to score the rounds); e.g. holdout_fraction=0.2"
            )


def split_indices(
    n_samples: int,
    selection: str,
    *,
    n_folds: int = 5,
    holdout_fraction: float = 0.2,
    random_state: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs for "holdout" (one pair) or "kfold" (n_folds pairs, shuffled)."""
    from sklearn.model_selection import KFold, ShuffleSplit

    check_selection(selection, n_folds, holdout_fraction)
    if selection == "kfold":
        if n_samples < n_folds:
            fix = f"n_folds <= {n_samples}" if n_samples >= 2 else "more data"
            raise ValueError(
                f"selection='kfold' needs at least n_folds={n_folds} training points, got "
                f"n_samples={n_samples}; use {fix} or selection='gcv'"
            )
        return list(
            KFold(n_splits=int(n_folds), shuffle=True, random_state=random_state).split(np.zeros(n_samples))
        )
    n_held = int(round(float(holdout_fraction) * n_samples))
    if n_held < 1 or n_samples - n_held < 1:
        raise ValueError(
            f"selection='holdout' with holdout_fraction={holdout_fraction} and n_samples={n_samples} leaves "
            f"{n_samples - n_held} training and {n_held} held-out point(s); each part needs at least one: "
            "use more data, another holdout_fraction, or selection='gcv'"
        )
    split = ShuffleSplit(n_splits=1, test_size=n_held, random_state=random_state)
    return list(split.split(np.zeros(n_samples)))


def subset_inputs(X: np.ndarray, train: np.ndarray, held: np.ndarray, precomputed: bool) -> tuple[Any, Any]:
    """Training and held-out inputs; for a precomputed kernel the train-by-train and held-by-train blocks."""
    if precomputed:
        return X[np.ix_(train, train)], X[np.ix_(held, train)]
    return X[train], X[held]


def held_out_scores(
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    n_candidates: int,
    selection: str,
    *,
    n_folds: int = 5,
    holdout_fraction: float = 0.2,
    random_state: Any = None,
    precomputed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared held-out error per candidate step.

    Parameters
    ----------
    fit_predict : callable
        ``fit_predict(X_train, y_train, X_held)`` returns the predictions of every candidate step on
        ``X_held``, shape ``(S, n_held[, m])``.
    X : ndarray
        Inputs (or the square kernel matrix with ``precomputed=True``).
    y : ndarray of shape (n,) or (n, m)
        Labels.
    n_candidates : int
        S.
    selection : {"holdout", "kfold"}
        The split.
    n_folds, holdout_fraction, random_state
        As in :func:`split_indices`.
    precomputed : bool, default=False
        X is a kernel matrix: split its rows and columns.

    Returns
    -------
    scores : ndarray of shape (S,)
        Mean squared error over all held-out points (summed over outputs).
    split_scores : ndarray of shape (n_splits, S)
        The same per split.
    """
    y = np.asarray(y, dtype=float)
    splits = split_indices(
        len(y), selection, n_folds=n_folds, holdout_fraction=holdout_fraction, random_state=random_state
    )
    split_sse = np.zeros((len(splits), n_candidates))
    split_n = np.zeros(len(splits))
    for i, (train, held) in enumerate(splits):
        X_train, X_held = subset_inputs(X, train, held, precomputed)
        pred = np.asarray(fit_predict(X_train, y[train], X_held), dtype=float)
        if pred.shape[0] != n_candidates:
            raise RuntimeError(f"fit_predict returned {pred.shape[0]} steps, expected {n_candidates}")
        err = pred.reshape(n_candidates, len(held), -1) - y[held].reshape(1, len(held), -1)
        split_sse[i] = np.sum(err**2, axis=(1, 2))
        split_n[i] = len(held)
    return split_sse.sum(axis=0) / split_n.sum(), split_sse / split_n[:, None]


def first_argmin(scores: np.ndarray) -> int:
    """Index of the smallest finite score (the earliest on ties); 0 if none is finite."""
    s = np.where(np.isfinite(scores), scores, np.inf)
    return int(np.argmin(s))


@dataclass
class SelectionResult:
    """The criterion per candidate step and the choice; prints its table, plots, saves CSV and JSON.

    ``KernelSelfDistillation(n_rounds="auto").selection_`` and the filter estimators' ``selection_`` are
    one of these.

    Attributes
    ----------
    criterion : str
        ``"gcv"``, ``"holdout"`` or ``"kfold"`` (or ``"validation"`` / ``"oracle"`` when scored on a
        given set).
    param_name : str
        What a step is (``"round"``, ``"alpha"``, ``"steps"``, ...).
    params : ndarray of shape (S,)
        The candidate steps (e.g. rounds 0..T-1).
    scores : ndarray of shape (S,)
        The criterion per step (lower is better).
    chosen : int
        Index of the chosen step (the first minimum).
    dof : ndarray of shape (S,) or None
        Effective degrees of freedom per step, when known.
    train_mse : ndarray of shape (S,) or None
        Training error per step, when known.
    split_scores : ndarray of shape (n_splits, S) or None
        The score of each split (holdout, kfold).
    settings : dict
        ``n_folds``, ``holdout_fraction``, ``random_state``.
    """

    criterion: str
    param_name: str
    params: np.ndarray
    scores: np.ndarray
    chosen: int
    dof: np.ndarray | None = None
    train_mse: np.ndarray | None = None
    split_scores: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen_param(self) -> float:
        """The chosen step's parameter value (e.g. the round number)."""
        return float(self.params[self.chosen])

    @property
    def n_candidates(self) -> int:
        return int(len(self.scores))

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: step, parameter, score, dof, train MSE, whether it was chosen."""
        rows = []
        for s in range(self.n_candidates):
            row = {"step": s, self.param_name: float(self.params[s]), self.criterion: float(self.scores[s])}
            if self.dof is not None:
                row["dof"] = float(self.dof[s])
            if self.train_mse is not None:
                row["train_mse"] = float(self.train_mse[s])
            row["chosen"] = s == self.chosen
            rows.append(row)
        return rows

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.settings.items() if v is not None)
        lines = [
            f"selection by {self.criterion}" + (f" ({where})" if where else "") + f": {self.param_name} "
            f"{_fmt(self.chosen_param)} chosen of {self.n_candidates} candidates",
            f"{self.param_name:>12}  {self.criterion:>12}"
            + (f"  {'dof':>9}" if self.dof is not None else "")
            + (f"  {'train MSE':>12}" if self.train_mse is not None else ""),
        ]
        for row in self.table():
            line = f"{_fmt(row[self.param_name]):>12}  {row[self.criterion]:12.6g}"
            if self.dof is not None:
                line += f"  {row['dof']:9.4g}"
            if self.train_mse is not None:
                line += f"  {row['train_mse']:12.6g}"
            lines.append(line + ("  <- chosen" if row["chosen"] else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SelectionResult(criterion={self.criterion!r}, chosen={self.chosen}, "
            f"{self.param_name}={_fmt(self.chosen_param)}, candidates={self.n_candidates})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "selfdistill.kernel.SelectionResult",
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
        }

    def to_json(self, path: str | os.PathLike) -> Path:
        """Everything as JSON (atomic write)."""
        return atomic_write_json(path, to_jsonable(self.to_dict()))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """The table as CSV (atomic write)."""
        rows = self.table()
        return atomic_write_csv(path, rows, list(rows[0]) if rows else ["step"])

    def plot(self, ax: Any = None) -> Any:
        """The criterion per candidate step (log scale) with the choice marked."""
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.0, 4.0), layout="constrained")
            ax = fig.add_subplot()
        fig = ax.figure
        x = self.params
        finite = np.isfinite(self.scores)
        ax.plot(x[finite], self.scores[finite], marker="o", label=self.criterion)
        if self.split_scores is not None and len(self.split_scores) > 1:
            for i, row in enumerate(self.split_scores):
                ax.plot(x, row, color="0.7", lw=0.8, label="per fold" if i == 0 else None, zorder=0)
        ax.axvline(self.chosen_param, color="k", ls="--", label=f"chosen: {_fmt(self.chosen_param)}")
        if np.all(self.scores[finite] > 0):
            ax.set_yscale("log")
        ax.set_xlabel(self.param_name)
        ax.set_ylabel(f"{self.criterion} (lower is better)")
        ax.set_title(f"choosing the {self.param_name} by {self.criterion}")
        ax.legend(fontsize="small")
        return fig


def select_by_gcv(path: Any) -> SelectionResult:
    """Choose the step of a FilterPath with the smallest GCV (no refits)."""
    scores = path.gcv
    return SelectionResult(
        "gcv",
        path.param_name,
        path.params,
        scores,
        first_argmin(scores),
        dof=path.dof,
        train_mse=path.train_mse,
    )


def select_held_out(
    path: Any,
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    selection: str,
    *,
    n_folds: int = 5,
    holdout_fraction: float = 0.2,
    random_state: Any = None,
    precomputed: bool = False,
) -> SelectionResult:
    """Choose the step of ``path`` (fitted on all of X, y) by holdout or k-fold refits (module docstring)."""
    scores, split_scores = held_out_scores(
        fit_predict, X, y, path.n_steps, selection, n_folds=n_folds, holdout_fraction=holdout_fraction,
        random_state=random_state, precomputed=precomputed,
    )  # fmt: skip
    settings: dict[str, Any] = {"random_state": random_state}
    settings.update({"n_folds": n_folds} if selection == "kfold" else {"holdout_fraction": holdout_fraction})
    return SelectionResult(
        selection, path.param_name, path.params, scores, first_argmin(scores), dof=path.dof,
        train_mse=path.train_mse, split_scores=split_scores, settings=settings,
    )  # fmt: skip


def truncate_chain(chain: Any, n_rounds: int, note: str) -> Any:
    """The chain's rounds 0..n_rounds-1 as a chain of its own (status "completed", ``note`` as message)."""
    if not 0 <= n_rounds <= chain.n_rounds:
        raise ValueError(f"n_rounds={n_rounds} out of range 0..{chain.n_rounds}")
    changes: dict[str, Any] = {
        "c": chain.c[:n_rounds],
        "z": chain.z[: n_rounds + 1],
        "status": "completed" if n_rounds < chain.n_rounds else chain.status,
        "stop_round": None if n_rounds < chain.n_rounds else chain.stop_round,
        "message": note,
    }
    if getattr(chain, "targets", None) is not None:
        changes["targets"] = chain.targets[: n_rounds + 1]
        changes["xi_rounds"] = chain.xi_rounds[:n_rounds]
    return dataclasses.replace(chain, **changes)


def _fmt(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def select_chain_round(
    estimator: Any, X: np.ndarray, y: np.ndarray, spectrum: Any, chain: Any
) -> tuple[Any, Any]:
    """KernelSelfDistillation(n_rounds="auto"): choose the round of ``chain`` (fitted on all of X, y).

    Returns (the chain truncated to rounds 0..chosen, SelectionResult). Holdout/kfold refit a clone of the
    estimator on each training part with n_rounds=None and max_rounds = the number of candidate rounds,
    i.e. the same epsilon / alpha / xi settings and the same stopping rule as the full fit, with c_t found
    on that part; a refit chain that stops earlier predicts 0 after a collapse and keeps its last round after
    converging (xi < 1).
    """
    import warnings

    from sklearn.base import clone

    from selfdistill.kernel.filters import FilterPath

    path = FilterPath.from_chain(chain, spectrum)
    if estimator.selection == "gcv":
        selection = select_by_gcv(path)
    else:
        n_candidates = chain.n_rounds

        def fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_held: np.ndarray) -> np.ndarray:
            est = clone(estimator).set_params(n_rounds=None, max_rounds=n_candidates)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # collapse at round 0 / max_rounds reached on a part
                try:
                    est.fit(X_train, y_train)
                except ValueError as err:
                    raise ValueError(
                        f"selection={estimator.selection!r}: the chain cannot be fitted on a training part "
                        f"({err}); use selection='gcv' or a larger epsilon"
                    ) from None
            staged = np.array(list(est.staged_predict(X_held)))
            out = np.zeros((n_candidates,) + staged.shape[1:])
            fitted = min(est.n_rounds_, n_candidates)
            out[:fitted] = staged[:fitted]
            if 0 < fitted < n_candidates and not est.result_.collapsed:
                out[fitted:] = staged[fitted - 1]  # converged (xi < 1): the fixed point from then on
            return out

        precomputed = isinstance(estimator.kernel, str) and estimator.kernel == "precomputed"
        selection = select_held_out(
            path, fit_predict, X, y, estimator.selection, n_folds=estimator.n_folds,
            holdout_fraction=estimator.holdout_fraction, random_state=estimator.random_state,
            precomputed=precomputed,
        )  # fmt: skip
    chosen = selection.chosen
    note = (
        f"round {chosen} chosen by {selection.criterion} among rounds 0..{chain.n_rounds - 1} (the full "
        "chain: "
        f"status {chain.status}{', ' + chain.message if chain.message else ''})"
    )
    return truncate_chain(chain, chosen + 1, note), selection
