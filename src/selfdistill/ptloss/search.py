"""Choosing the PTLoss perturbation: random candidates scored by their proxy teachers on labeled data.

Rationale (project spec, after Menon et al. 2021, Prop. 3): the distillation risk bound has a term
``(E_x ||p_t(x) - p*(x)||_2)^2`` that does not shrink with the transfer-set size; PTLoss replaces ``p_t``
by the proxy teacher ``p_px``, so pick ``eps`` whose proxy teacher is closest to the true class
probabilities ``p*``.
On a labeled validation set, ``mean_i ||p_px(x_i) - onehot(y_i)||^2`` (the Brier score) estimates
``E ||p_px - p*||^2`` up to a constant that does not depend on ``eps``. No student is trained per candidate.

Procedure: candidate 0 is ``eps = 0`` (the plain teacher, always the baseline); candidates 1..S-1 are drawn
i.i.d. per entry from ``uniform(-scale, scale)`` (default, ``scale = 0.25``: for M <= 5 every such candidate
gives a convex proxy problem) or ``normal(0, scale^2)``, seeded. All proxy teachers are solved batched
(:mod:`selfdistill.ptloss.proxy`) block by block, so memory stays bounded, and each block is scored and
discarded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfdistill.io import atomic_save_figure, atomic_write_json, atomic_write_text
from selfdistill.ptloss.loss import as_epsilon, positive_int, positive_real
from selfdistill.ptloss.proxy import (
    check_probabilities,
    convexity_margin,
    default_tolerance,
    iter_proxy_blocks,
)

CRITERIA = ("brier", "tv", "nll")
DISTRIBUTIONS = ("uniform", "normal")
COLUMNS = (
    "candidate",
    "brier",
    "tv",
    "nll",
    "accuracy",
    "shift_tv",
    "convexity_margin",
    "converged_fraction",
    "max_residual",
    "n_nonconvex",
    "n_boundary",
)
COLUMN_HELP = {
    "brier": "mean_i ||p_px(x_i) - onehot(y_i)||_2^2 (lower is better)",
    "tv": "mean_i total variation between p_px(x_i) and onehot(y_i) = mean_i (1 - p_px,y_i)",
    "nll": "mean_i -log p_px,y_i",
    "accuracy": "fraction of examples whose proxy-teacher argmax is the label",
    "shift_tv": "mean_i total variation between the proxy teacher and the teacher (how far eps moved it)",
    "convexity_margin": "min over classes and p of p^2 f''(p); > 0: convex problem, unique proxy teacher",
    "converged_fraction": "fraction of examples whose proxy solve converged",
    "max_residual": "largest fixed-point residual of the proxy solve",
    "n_nonconvex": "examples where the proxy problem is not convex at the solution",
    "n_boundary": "examples whose proxy teacher sits on the simplex boundary",
}


@dataclass
class PerturbationSearchResult:
    """Candidates, their scores and the selected perturbation; prints, plots and saves itself."""

    epsilons: Tensor  # (S, C|1, M); candidate 0 is the zero perturbation when include_zero
    table: dict[str, np.ndarray]  # column -> (S,) values, see COLUMNS / COLUMN_HELP
    criterion: str
    best_index: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_candidates(self) -> int:
        return int(self.epsilons.shape[0])

    @property
    def scores(self) -> np.ndarray:
        """The selection criterion of every candidate, shape ``(S,)``."""
        return self.table[self.criterion]

    @property
    def best_epsilon(self) -> Tensor:
        """The selected perturbation: ``(C, M)`` (class-wise) or ``(M,)`` (shared), ready for ``PTLoss``."""
        eps = self.epsilons[self.best_index]
        return eps[0] if eps.shape[0] == 1 else eps

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_index])

    @property
    def baseline_score(self) -> float | None:
        """Score of the plain teacher (candidate 0) when the zero perturbation was included."""
        return float(self.scores[0]) if self.settings.get("include_zero", True) else None

    def rows(self) -> list[dict[str, float | int]]:
        """The candidate table as a list of rows (one dict per candidate)."""
        out = []
        for i in range(self.n_candidates):
            row: dict[str, float | int] = {}
            for key in COLUMNS:
                value = self.table[key][i]
                row[key] = int(value) if key in ("candidate", "n_nonconvex", "n_boundary") else float(value)
            out.append(row)
        return out

    def to_dict(self, include_epsilons: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary: settings, best candidate, the table and (optionally) all candidates."""
        out: dict[str, Any] = {
            "criterion": self.criterion,
            "best_index": self.best_index,
            "best_score": self.best_score,
            "baseline_score": self.baseline_score,
            "best_epsilon": self.best_epsilon.tolist(),
            "settings": dict(self.settings),
            "columns": dict(COLUMN_HELP),
            "table": self.rows(),
        }
        if include_epsilons:
            out["epsilons"] = self.epsilons.tolist()
        return out

    def to_json(self, path: str | Path, include_epsilons: bool = True) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict(include_epsilons))
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write the candidate table (one row per candidate) as CSV, atomically."""
        path = Path(path)
        lines = [",".join(COLUMNS)]
        for row in self.rows():
            lines.append(
                ",".join(repr(row[key]) if isinstance(row[key], float) else str(row[key]) for key in COLUMNS)
            )
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    @staticmethod
    def read_csv(path: str | Path) -> list[dict[str, float]]:
        """Read back a table written by :meth:`to_csv`."""
        with open(path, newline="") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]

    def __repr__(self) -> str:  # the dataclass default would dump every candidate's epsilon
        return (
            f"PerturbationSearchResult(n_candidates={self.n_candidates}, "
            f"epsilon_shape={tuple(self.epsilons.shape[1:])}, criterion={self.criterion!r}, "
            f"best_index={self.best_index}, best_score={self.best_score:.6g})"
        )

    def __str__(self) -> str:
        s = self.settings
        order = np.argsort(self.scores, kind="stable")
        lines = [
            f"PerturbationSearchResult: {self.n_candidates} candidates (M={s.get('M')}, "
            f"{s.get('distribution')}(scale={s.get('scale')}), class_wise={s.get('class_wise')}, "
            f"seed={s.get('seed')}) on {s.get('n_examples')} examples x {s.get('n_classes')} classes",
            f"criterion {self.criterion}: best candidate {self.best_index} = {self.best_score:.6f}"
            + (
                f" (plain teacher {self.baseline_score:.6f}, "
                f"change {self.best_score - self.baseline_score:+.6f})"
                if self.baseline_score is not None
                else ""
            ),
            f"  {'cand':>5} {'brier':>10} {'tv':>10} {'nll':>10} {'acc':>7} {'shift_tv':>9} {'convex':>7}",
        ]
        shown = list(order[:5])
        if self.baseline_score is not None and 0 not in shown:
            shown.append(0)
        for i in shown:
            t = self.table
            lines.append(
                f"  {i:>5d} {t['brier'][i]:10.6f} {t['tv'][i]:10.6f} {t['nll'][i]:10.6f} "
                f"{t['accuracy'][i]:7.4f} "
                f"{t['shift_tv'][i]:9.5f} {'yes' if t['convexity_margin'][i] > 0 else 'no':>7}"
            )
        failed = int(np.sum(self.table["converged_fraction"] < 1))
        if failed:
            lines.append(
                f"  warning: {failed} candidate(s) had proxy solves that did not converge everywhere"
            )
        return "\n".join(lines)

    def plot(self, ax: Any = None, path: str | Path | None = None, criterion: str | None = None) -> Any:
        """Scatter of each candidate's score (plain teacher and best marked); saves to ``path`` if given."""
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        criterion = criterion or self.criterion
        if criterion not in self.table:
            raise ValueError(f"criterion must be one of {sorted(self.table)}, got {criterion!r}")
        values = self.table[criterion]
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
        ax.scatter(np.arange(self.n_candidates), values, s=10, color="tab:blue", label="random candidates")
        if self.baseline_score is not None:
            ax.axhline(values[0], color="gray", linestyle="--", label="plain teacher (eps = 0)")
        ax.scatter(
            [self.best_index], [values[self.best_index]], s=80, marker="*", color="tab:red", label="selected"
        )
        ax.set_xlabel("candidate")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{criterion} of the proxy teacher (validation)")
        ax.set_title("PTLoss perturbation search")
        ax.legend(loc="best", fontsize="small")
        if path is not None:
            atomic_save_figure(ax.figure, path, bbox_inches="tight")
            if fig is not None:
                plt.close(fig)
        return ax


def sample_candidates(
    num_classes: int,
    M: int,
    n_candidates: int,
    *,
    scale: float = 0.25,
    distribution: str = "uniform",
    seed: int = 0,
    class_wise: bool = True,
    include_zero: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random perturbations ``(S, C, M)`` (class-wise) or ``(S, 1, M)`` (shared); candidate 0 = zeros."""
    M = positive_int(M, "M (number of perturbed series orders)")
    n_candidates = positive_int(n_candidates, "n_candidates")
    scale = positive_real(scale, "scale")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    rows = num_classes if class_wise else 1
    generator = torch.Generator().manual_seed(int(seed))
    n_random = n_candidates - 1 if include_zero else n_candidates
    if distribution == "uniform":
        random = (torch.rand(n_random, rows, M, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    else:
        random = torch.randn(n_random, rows, M, generator=generator, dtype=torch.float64) * scale
    parts = [torch.zeros(1, rows, M, dtype=torch.float64)] if include_zero else []
    return torch.cat([*parts, random]).to(dtype)


def _check_labels(labels: Tensor | np.ndarray, n_examples: int, n_classes: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n_examples:
        raise ValueError(
            f"labels_val must be a 1-D array of {n_examples} class indices (one per row of "
            "teacher_probs_val), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        if not bool(torch.all(labels == labels.round())):
            raise ValueError("labels_val must hold integer class indices, got non-integer values")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels_val must hold integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if n_examples and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels_val must lie in [0, {n_classes - 1}] (teacher_probs_val has {n_classes} classes), got "
            f"values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def select_perturbation(
    teacher_probs_val: Tensor | np.ndarray,
    labels_val: Tensor | np.ndarray,
    M: int = 5,
    n_candidates: int = 200,
    *,
    scale: float = 0.25,
    distribution: str = "uniform",
    seed: int = 0,
    criterion: str = "brier",
    class_wise: bool = True,
    include_zero: bool = True,
    candidates: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    max_iter: int = 100,
    tol: float | None = None,
    max_elements: int = 1 << 19,
    prob_atol: float = 1e-4,
    min_converged: float = 0.999,
) -> PerturbationSearchResult:
    """Pick the perturbation whose proxy teacher is closest to the labels (module docstring).

    ``teacher_probs_val``: ``(N, C)`` teacher probabilities on a labeled validation set (rows sum to 1 within
    ``prob_atol``); ``labels_val``: ``(N,)`` class indices. ``candidates`` (``(S, C|1, M)``) replaces the
    random draw. Computation runs in ``dtype`` (float32 by default: scores to ~1e-6) in blocks of at most
    ``max_elements`` entries. ``criterion``: ``"brier"`` (default), ``"tv"`` or ``"nll"``; ties go to the
    lowest candidate index, so the plain teacher wins unless a perturbation is strictly better. Candidates
    whose proxy solve converged on fewer than ``min_converged`` of the examples (float32 rounding near
    non-convex problems) are reported but never selected.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    probs = check_probabilities(torch.as_tensor(teacher_probs_val), "teacher_probs_val", atol=prob_atol).to(
        dtype
    )
    n_examples, n_classes = probs.shape
    if n_examples == 0:
        raise ValueError("teacher_probs_val is empty: the search needs labeled validation examples")
    labels = _check_labels(labels_val, n_examples, n_classes).to(probs.device)
    if candidates is None:
        eps = sample_candidates(
            n_classes,
            M,
            n_candidates,
            scale=scale,
            distribution=distribution,
            seed=seed,
            class_wise=class_wise,
            include_zero=include_zero,
            dtype=dtype,
        )
    else:
        eps = as_epsilon(candidates, n_classes, name="candidates").to(dtype)
        if eps.ndim != 3:
            raise ValueError(f"candidates must have shape (S, C, M) or (S, 1, M), got {tuple(eps.shape)}")
        M, n_candidates, class_wise = int(eps.shape[-1]), int(eps.shape[0]), eps.shape[1] != 1
        include_zero = bool(eps[0].abs().amax() == 0)
    eps = eps.to(probs.device)
    tol = default_tolerance(dtype) if tol is None else tol

    n_cand = eps.shape[0]
    sums = {
        key: torch.zeros(n_cand, dtype=torch.float64)
        for key in ("brier", "tv", "nll", "accuracy", "shift_tv")
    }
    n_converged = torch.zeros(n_cand, dtype=torch.float64)
    max_residual = torch.zeros(n_cand, dtype=torch.float64)
    n_nonconvex = torch.zeros(n_cand, dtype=torch.int64)
    n_boundary = torch.zeros(n_cand, dtype=torch.int64)
    tiny = torch.finfo(dtype).tiny
    for cand, ex, p, info, _ in iter_proxy_blocks(
        probs, eps, max_iter=max_iter, tol=tol, max_elements=max_elements
    ):
        y = labels[ex]
        p_label = p.gather(-1, y.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(-1)  # (s, n)
        brier = (p * p).sum(-1) - 2 * p_label + 1
        sums["brier"][cand] += brier.sum(-1).double().cpu()
        sums["tv"][cand] += (1 - p_label).sum(-1).double().cpu()
        sums["nll"][cand] += (-torch.log(p_label.clamp_min(tiny))).sum(-1).double().cpu()
        sums["accuracy"][cand] += (p_label >= p.amax(-1)).sum(-1).double().cpu()  # (amax: argmax is slow)
        sums["shift_tv"][cand] += (0.5 * (p - probs[ex]).abs().sum(-1)).sum(-1).double().cpu()
        n_converged[cand] += info["converged"].sum(-1).double().cpu()
        max_residual[cand] = torch.maximum(max_residual[cand], info["residual"].amax(-1).double().cpu())
        n_nonconvex[cand] += info["nonconvex"].sum(-1).cpu()
        n_boundary[cand] += info["boundary"].sum(-1).cpu()

    table = {key: (value / n_examples).numpy() for key, value in sums.items()}
    table["candidate"] = np.arange(n_cand)
    table["convexity_margin"] = convexity_margin(eps.double().cpu()).numpy()
    table["converged_fraction"] = (n_converged / n_examples).numpy()
    table["max_residual"] = max_residual.numpy()
    table["n_nonconvex"] = n_nonconvex.numpy()
    table["n_boundary"] = n_boundary.numpy()
    reliable = table["converged_fraction"] >= min_converged  # candidates with failed solves are never chosen
    scores = np.where(reliable, table[criterion], np.inf)
    best = int(np.argmin(scores)) if np.isfinite(scores).any() else 0
    settings = {
        "M": int(M),
        "n_candidates": int(n_cand),
        "scale": float(scale),
        "distribution": distribution if candidates is None else "given",
        "seed": int(seed),
        "class_wise": bool(class_wise),
        "include_zero": bool(include_zero),
        "n_examples": int(n_examples),
        "n_classes": int(n_classes),
        "dtype": str(dtype).replace("torch.", ""),
        "tol": float(tol),
        "min_converged": float(min_converged),
    }
    return PerturbationSearchResult(
        epsilons=eps.cpu(), table=table, criterion=criterion, best_index=best, settings=settings
    )
