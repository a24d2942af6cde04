"""Choosing the PTLoss perturbation (and temperature): candidates scored by their proxy teachers.

Rationale (``docs/specs/ptloss.md``, after Menon et al. 2021, Prop. 3): the distillation risk bound has a term
``(E_x ||p_t(x) - p*(x)||_2)^2`` that does not shrink with the transfer-set size; PTLoss replaces ``p_t``
by the proxy teacher ``p_px``, so pick ``eps`` whose proxy teacher is closest to the true class
probabilities ``p*``. On a labeled validation set, ``mean_i ||p_px(x_i) - onehot(y_i)||^2`` (the Brier
score) estimates ``E ||p_px - p*||^2`` up to a constant that does not depend on ``eps``. No student is
trained per candidate.

The proxy scored is the proxy of the loss the student trains with: at temperature ``T`` and ``form``
(``"full"`` or ``"truncated"``), the minimiser over the simplex of ``L_form(softened teacher, r)``
(:mod:`selfdistill.ptloss.proxy`). A grid of temperatures is searched jointly with ``eps``: one table row
per (candidate, temperature), and the selection is a pair ``(eps, T)``; candidate 0 is ``eps = 0``, so the
``eps = 0`` rows are temperature KD at each ``T``.

Procedure: candidates 1..S-1 are drawn i.i.d. per entry (``distribution``, ``scale``, seeded; see
:func:`~selfdistill.ptloss.sample_candidates`). All proxy teachers are solved batched, block by block (bounded
memory), each block scored and discarded. Every row reports its convexity certificate and its convergence; a
row is *eligible* when all its proxy solves converged (``min_converged``) and, unless
``require_convex=False``, its problem is certified convex (a non-convex problem has several local minimisers,
so the scored one need not be the one training reaches). Only eligible rows are selected (lowest score, ties
to the lowest row).
"""

from __future__ import annotations

import csv
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfdistill.io import atomic_save_figure, atomic_write_csv, atomic_write_json
from selfdistill.ptloss.loss import FORMS, as_epsilon, positive_int, positive_real, soften_probabilities
from selfdistill.ptloss.proxy import (
    SPACES,
    check_probabilities,
    convexity_margin,
    default_tolerance,
    iter_proxy_blocks,
    to_space,
)

CRITERIA = ("brier", "tv", "nll")
DISTRIBUTIONS = ("relative", "uniform", "normal")
DEFAULT_SCALE = 0.9
DEFAULT_DISTRIBUTION = "relative"
COLUMNS = (
    "candidate",
    "temperature",
    "brier",
    "tv",
    "nll",
    "accuracy",
    "shift_tv",
    "eps_shift_tv",
    "convexity_margin",
    "convex",
    "converged_fraction",
    "converged",
    "max_residual",
    "n_nonconvex",
    "n_boundary",
    "eligible",
)
INTEGER_COLUMNS = ("candidate", "convex", "converged", "n_nonconvex", "n_boundary", "eligible")
COLUMN_HELP = {
    "candidate": "index of the perturbation in `epsilons` (0: eps = 0 when include_zero)",
    "temperature": "the temperature T of the loss whose proxy teacher is scored",
    "brier": "mean_i ||p_px(x_i) - onehot(y_i)||_2^2 (lower is better)",
    "tv": "mean_i total variation between p_px(x_i) and onehot(y_i) = mean_i (1 - p_px,y_i)",
    "nll": "mean_i -log p_px,y_i",
    "accuracy": "fraction of examples whose proxy-teacher argmax is the label",
    "shift_tv": "mean_i total variation between the proxy teacher and the plain teacher (all of the move)",
    "eps_shift_tv": "mean_i total variation between the proxy teacher and the eps = 0 proxy at the same T "
    "(the move due to eps alone)",
    "convexity_margin": "convexity certificate of the proxy problem (proxy.convexity_margin); > 0: convex",
    "convex": "1 when convexity_margin > 0 (unique proxy teacher)",
    "converged_fraction": "fraction of examples whose proxy solve converged",
    "converged": "1 when converged_fraction >= min_converged",
    "max_residual": "largest residual of the proxy solves (inf: a solve failed)",
    "n_nonconvex": "examples where the proxy problem is not convex at the solution",
    "n_boundary": "examples whose proxy teacher would leave the teacher's support (minimiser on the support)",
    "eligible": "1 when the row may be selected: converged, and convex unless require_convex=False",
}


def _temperature_grid(temperature: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(temperature, Tensor | np.ndarray):
        values = np.asarray(temperature, dtype=float).reshape(-1).tolist()
    elif isinstance(temperature, numbers.Real):
        values = [temperature]
    elif isinstance(temperature, Sequence) and not isinstance(temperature, str):
        values = list(temperature)
    else:
        raise ValueError(f"temperature must be a positive number or a list of them, got {temperature!r}")
    if not values:
        raise ValueError("temperature: give a positive number or a non-empty list of them")
    grid = tuple(positive_real(value, "temperature") for value in values)
    if len(set(grid)) != len(grid):
        raise ValueError(f"temperature: the grid {list(grid)} repeats a value")
    return grid


@dataclass
class PerturbationSearchResult:
    """Candidates x temperatures, their scores and the selected ``(eps, T)``; prints, plots and saves itself.

    Returned by :func:`~selfdistill.ptloss.select_perturbation`. Table rows are ``(candidate, temperature)``
    pairs, temperature-major: row ``k * S + s`` is candidate ``s`` at ``temperatures[k]`` (with one
    temperature, row = candidate); :meth:`row` finds a pair's row.

    Attributes
    ----------
    epsilons : Tensor, shape (S, C, M) or (S, 1, M)
        The candidates; candidate 0 is the zero perturbation (plain KD) when ``include_zero``.
    table : dict of str to ndarray
        One ``(S * K,)`` array per column: the scores (``brier``, ``tv``, ``nll``, ``accuracy``), how far the
        proxy moved (``shift_tv``, ``eps_shift_tv``), the convexity certificate, convergence and
        ``eligible`` (``COLUMN_HELP`` of :mod:`selfdistill.ptloss.search` describes each).
    criterion : str
        The column that chose the row.
    best_index : int
        The selected row: the lowest ``criterion`` among eligible rows.
    settings : dict
        The search's settings (``M``, ``temperatures``, ``form``, ``space``, ``scale``, ``seed``, ...).

    Notes
    -----
    Use the selection with ``PTLoss(**result.ptloss_kwargs())`` (or ``eps, T = result.selected``).
    ``print(result)`` shows the best rows and the ``eps = 0`` rows, :meth:`plot` every row's score,
    :meth:`to_csv` and :meth:`to_json` save it.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import select_perturbation
    >>> probs = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> search = select_perturbation(probs, torch.tensor([0, 1, 1]), M=2, n_candidates=5, temperature=[1, 2])
    >>> search.n_rows, int(search.eligible.sum())
    (10, 10)

    Row ``search.row(0, 1.0)`` is ``eps = 0`` at ``T = 1``, whose proxy is the teacher itself: its Brier
    score is ``((0.2^2 + 0.2^2) + (0.3^2 + 0.3^2) + (0.6^2 + 0.6^2)) / 3``:

    >>> round(search.rows()[search.row(0, 1.0)]["brier"], 4), round(0.98 / 3, 4)
    (0.3267, 0.3267)
    """

    epsilons: Tensor  # (S, C|1, M); candidate 0 is the zero perturbation when include_zero
    table: dict[str, np.ndarray]  # column -> (S * K,) values, see COLUMNS / COLUMN_HELP
    criterion: str
    best_index: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_candidates(self) -> int:
        """S, the number of candidate perturbations."""
        return int(self.epsilons.shape[0])

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperature grid searched, in table order."""
        return tuple(self.settings.get("temperatures", (1.0,)))

    @property
    def form(self) -> str:
        """The PTLoss form whose proxy teachers were scored (``"full"`` or ``"truncated"``)."""
        return str(self.settings.get("form", "full"))

    @property
    def n_rows(self) -> int:
        """Rows of the table, S times the number of temperatures."""
        return int(len(self.table["candidate"]))

    @property
    def scores(self) -> np.ndarray:
        """The selection criterion of every row, shape ``(S * K,)``."""
        return self.table[self.criterion]

    @property
    def eligible(self) -> np.ndarray:
        """Boolean mask of the rows that may be selected."""
        return self.table["eligible"].astype(bool)

    def epsilon(self, row: int) -> Tensor:
        """The perturbation of ``row``: ``(C, M)`` (class-wise) or ``(M,)`` (shared), ready for ``PTLoss``."""
        eps = self.epsilons[int(self.table["candidate"][row])]
        return eps[0] if eps.shape[0] == 1 else eps

    def temperature(self, row: int) -> float:
        """The temperature of ``row``."""
        return float(self.table["temperature"][row])

    def row(self, candidate: int, temperature: float | None = None) -> int:
        """The table row of ``candidate`` at ``temperature`` (default: the selected temperature)."""
        temperature = self.best_temperature if temperature is None else float(temperature)
        if temperature not in self.temperatures:
            grid = list(self.temperatures)
            raise ValueError(f"temperature {temperature:g} is not in the searched grid {grid}")
        if not 0 <= int(candidate) < self.n_candidates:
            raise ValueError(f"candidate must be in [0, {self.n_candidates - 1}], got {candidate!r}")
        return self.temperatures.index(temperature) * self.n_candidates + int(candidate)

    def ptloss_kwargs(self, row: int | None = None) -> dict[str, Any]:
        """``PTLoss(**result.ptloss_kwargs())`` is the loss whose proxy was scored in ``row`` (default: the
        selected row): ``{"epsilon", "temperature", "form"}``."""
        row = self.best_index if row is None else int(row)
        return {"epsilon": self.epsilon(row), "temperature": self.temperature(row), "form": self.form}

    @property
    def best_candidate(self) -> int:
        """The candidate index (into ``epsilons``) of the selected row."""
        return int(self.table["candidate"][self.best_index])

    @property
    def best_epsilon(self) -> Tensor:
        """The selected perturbation: ``(C, M)`` (class-wise) or ``(M,)`` (shared), ready for ``PTLoss``."""
        return self.epsilon(self.best_index)

    @property
    def best_temperature(self) -> float:
        """The temperature of the selected row."""
        return self.temperature(self.best_index)

    @property
    def selected(self) -> tuple[Tensor, float]:
        """The selection as ``(eps, T)``."""
        return self.best_epsilon, self.best_temperature

    @property
    def best_score(self) -> float:
        """The criterion of the selected row."""
        return float(self.scores[self.best_index])

    def zero_rows(self) -> dict[float, int]:
        """``{T: row}`` of the ``eps = 0`` candidate at each temperature (temperature KD's proxy); empty
        when the zero perturbation was not included."""
        if not self.settings.get("include_zero", True):
            return {}
        return {t: k * self.n_candidates for k, t in enumerate(self.temperatures)}

    @property
    def baseline_index(self) -> int | None:
        """Row of ``eps = 0`` at ``T = 1`` (the plain teacher) if in the grid, else at the first
        temperature."""
        rows = self.zero_rows()
        if not rows:
            return None
        return rows.get(1.0, rows[self.temperatures[0]])

    @property
    def baseline_score(self) -> float | None:
        """Score of ``eps = 0`` (see :attr:`baseline_index`) when the zero perturbation was included."""
        index = self.baseline_index
        return None if index is None else float(self.scores[index])

    def rows(self) -> list[dict[str, float | int]]:
        """The table as a list of rows (one dict per (candidate, temperature))."""
        out = []
        for i in range(self.n_rows):
            row: dict[str, float | int] = {}
            for key in COLUMNS:
                value = self.table[key][i]
                row[key] = int(value) if key in INTEGER_COLUMNS else float(value)
            out.append(row)
        return out

    def to_dict(self, include_epsilons: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary: settings, selection, the table and (optionally) all candidates."""
        out: dict[str, Any] = {
            "criterion": self.criterion,
            "best_index": self.best_index,
            "best_candidate": self.best_candidate,
            "best_temperature": self.best_temperature,
            "best_score": self.best_score,
            "baseline_index": self.baseline_index,
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
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write_json(Path(path), self.to_dict(include_epsilons))

    def to_csv(self, path: str | Path) -> Path:
        """Write the table (one row per (candidate, temperature)) as CSV, atomically."""
        return atomic_write_csv(Path(path), self.rows(), COLUMNS)

    @staticmethod
    def read_csv(path: str | Path) -> list[dict[str, float]]:
        """Read back a table written by :meth:`to_csv`."""
        with open(path, newline="") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]

    def __repr__(self) -> str:  # the dataclass default would dump every candidate's epsilon
        return (
            f"PerturbationSearchResult(n_candidates={self.n_candidates}, "
            f"temperatures={list(self.temperatures)}, form={self.form!r}, "
            f"epsilon_shape={tuple(self.epsilons.shape[1:])}, criterion={self.criterion!r}, "
            f"best_index={self.best_index}, best_score={self.best_score:.6g})"
        )

    def __str__(self) -> str:
        s, t = self.settings, self.table
        eligible = self.eligible
        lines = [
            f"PerturbationSearchResult: {self.n_candidates} candidates (M={s.get('M')}, "
            f"{s.get('distribution')}(scale={s.get('scale')}), class_wise={s.get('class_wise')}, "
            f"seed={s.get('seed')}) x T in {list(self.temperatures)}, form={self.form}, "
            f"proxy space={s.get('space', 'softened')}, on {s.get('n_examples')} examples x "
            f"{s.get('n_classes')} classes",
            f"criterion {self.criterion}: selected candidate {self.best_candidate} at T = "
            f"{self.best_temperature:g} (row {self.best_index}) = {self.best_score:.6f}"
            + (
                f" (eps = 0 at T = {self.temperature(self.baseline_index):g}: {self.baseline_score:.6f}, "
                f"change {self.best_score - self.baseline_score:+.6f})"
                if self.baseline_index is not None
                else ""
            ),
            f"  {'row':>5} {'cand':>5} {'T':>6} {'brier':>9} {'tv':>8} {'nll':>8} {'acc':>6} "
            f"{'shift_tv':>8} {'eps_tv':>8} {'convex':>6} {'conv':>5}",
        ]
        order = [int(i) for i in np.argsort(np.where(eligible, self.scores, np.inf), kind="stable")]
        shown = order[:5] + [row for row in self.zero_rows().values() if row not in order[:5]]
        for i in shown:
            lines.append(
                f"  {i:>5d} {int(t['candidate'][i]):>5d} {t['temperature'][i]:>6g} {t['brier'][i]:9.5f} "
                f"{t['tv'][i]:8.5f} {t['nll'][i]:8.5f} {t['accuracy'][i]:6.4f} {t['shift_tv'][i]:8.5f} "
                f"{t['eps_shift_tv'][i]:8.5f} {'yes' if t['convex'][i] else 'no':>6} "
                f"{'yes' if t['converged'][i] else 'NO':>5}"
            )
        n_failed, n_nonconvex = int(np.sum(t["converged"] == 0)), int(np.sum(t["convex"] == 0))
        lines.append(
            f"  {n_nonconvex} of {self.n_rows} rows non-convex"
            + (" (not selectable)" if s.get("require_convex", True) else "")
            + f", {n_failed} not converged (never selected)"
        )
        return "\n".join(lines)

    def plot(self, ax: Any = None, path: str | Path | None = None, criterion: str | None = None) -> Any:
        """Each row's score against its candidate index, one colour per temperature; rows that are not
        eligible are drawn apart (grey crosses: not converged; hollow: non-convex), never as regular points;
        the selection is a red star. Saves to ``path`` if given."""
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        criterion = criterion or self.criterion
        if criterion not in CRITERIA + ("accuracy", "shift_tv", "eps_shift_tv"):
            raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
        values, t = self.table[criterion], self.table
        converged, convex = t["converged"].astype(bool), t["convex"].astype(bool)
        regular = self.eligible
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
        colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(self.temperatures), 1)))
        for k, temperature in enumerate(self.temperatures):
            rows = (t["temperature"] == temperature) & regular
            label = f"T = {temperature:g}"
            ax.scatter(t["candidate"][rows], values[rows], s=10, color=colours[k], label=label)
        hollow = converged & ~convex & ~regular
        if hollow.any():
            ax.scatter(
                t["candidate"][hollow], values[hollow], s=14, facecolors="none", edgecolors="gray",
                label="non-convex (not selectable)",
            )  # fmt: skip
        failed = ~converged & np.isfinite(values)
        if failed.any():
            ax.scatter(
                t["candidate"][failed], values[failed], s=14, marker="x", color="lightgray",
                label="not converged (never selected)",
            )  # fmt: skip
        if self.baseline_index is not None:
            label = f"eps = 0, T = {self.temperature(self.baseline_index):g}"
            ax.axhline(values[self.baseline_index], color="gray", linestyle="--", label=label)
        best = self.best_index
        ax.scatter([t["candidate"][best]], [values[best]], s=90, marker="*", color="tab:red",
                   label="selected")
        ax.set_xlabel("candidate")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{criterion} of the proxy teacher (validation)")
        ax.set_title(f"PTLoss perturbation search ({self.form} form)")
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
    scale: float = DEFAULT_SCALE,
    distribution: str = DEFAULT_DISTRIBUTION,
    seed: int = 0,
    class_wise: bool = True,
    include_zero: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random perturbations ``(S, C, M)`` (class-wise) or ``(S, 1, M)`` (shared); candidate 0 = zeros.

    ``distribution="relative"`` (default): ``eps_{k,m} = delta_{k,m} / m`` with ``delta ~ uniform(-scale,
    scale)``, i.e. each series coefficient ``1/m`` is scaled by ``1 + delta``. For ``scale < 1`` every such
    candidate has a convex proxy problem for any M and both forms (full form: ``p^2 |h''(1 - p)| <= scale
    p^2 sum_{m>=2} (m - 1) (1 - p)^(m-2) <= scale``, so :func:`~selfdistill.ptloss.convexity_margin`
    ``>= 1 - scale``, and ``W >= 1 - scale > 0``; truncated form: every coefficient stays positive), while
    the first-order coefficient, which alone moves a sharp teacher and never affects convexity, ranges
    over ``(-scale, scale)``. ``"uniform"``: each entry from ``uniform(-scale, scale)`` (orders m >= 2
    make the problem non-convex quickly as ``scale`` grows); ``"normal"``: ``normal(0, scale^2)``. Seeded.

    Examples
    --------
    >>> from selfdistill.ptloss import convexity_margin, sample_candidates
    >>> eps = sample_candidates(num_classes=10, M=5, n_candidates=50, seed=0)
    >>> eps.shape, bool(eps[0].abs().max() == 0)
    (torch.Size([50, 10, 5]), True)
    >>> bool((convexity_margin(eps) >= 1 - 0.9 - 1e-6).all())          # default scale 0.9: all convex
    True
    """
    M = positive_int(M, "M (number of perturbed series orders)")
    n_candidates = positive_int(n_candidates, "n_candidates")
    scale = positive_real(scale, "scale")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    rows = num_classes if class_wise else 1
    generator = torch.Generator().manual_seed(int(seed))
    n_random = n_candidates - 1 if include_zero else n_candidates
    if distribution == "normal":
        random = torch.randn(n_random, rows, M, generator=generator, dtype=torch.float64) * scale
    else:
        random = (torch.rand(n_random, rows, M, generator=generator, dtype=torch.float64) * 2 - 1) * scale
        if distribution == "relative":
            random /= torch.arange(1, M + 1, dtype=torch.float64)
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


def _zero_proxy(
    softened: Tensor, eps_shape: tuple[int, int], temperature: float, form: str, space: str, **solve: Any
) -> Tensor:
    """The ``eps = 0`` proxy teacher at ``temperature`` in ``space`` (the reference of ``eps_shift_tv``)."""
    zero = torch.zeros(1, *eps_shape, dtype=softened.dtype, device=softened.device)
    out = torch.empty_like(softened)
    for _, ex, p, _, _ in iter_proxy_blocks(softened, zero, form=form, **solve):
        out[ex] = to_space(p[0], temperature, space)
    return out


def select_perturbation(
    teacher_probs_val: Tensor | np.ndarray,
    labels_val: Tensor | np.ndarray,
    M: int = 5,
    n_candidates: int = 200,
    *,
    temperature: float | Sequence[float] = 1.0,
    form: str = "full",
    space: str = "softened",
    scale: float = DEFAULT_SCALE,
    distribution: str = DEFAULT_DISTRIBUTION,
    seed: int = 0,
    criterion: str = "brier",
    class_wise: bool = True,
    include_zero: bool = True,
    candidates: Tensor | None = None,
    require_convex: bool = True,
    dtype: torch.dtype = torch.float32,
    max_iter: int = 100,
    tol: float | None = None,
    max_elements: int = 1 << 19,
    prob_atol: float = 1e-4,
    min_converged: float = 1.0,
) -> PerturbationSearchResult:
    r"""Choose PTLoss's perturbation and temperature on labeled validation data, without training a student.

    Every candidate :math:`\epsilon` (candidate 0 is :math:`\epsilon = 0`) at every temperature :math:`T`
    of the grid gets its proxy teacher :math:`p_{\mathrm{px}}` (:func:`~selfdistill.ptloss.proxy_teacher`,
    for the loss trained at ``(T, form)``) and its score, by default the Brier score

    .. math::

        \frac{1}{N} \sum_{i=1}^{N} \bigl\| p_{\mathrm{px}}(x_i) - e_{y_i} \bigr\|_2^2,

    which estimates :math:`\mathbb{E}\, \| p_{\mathrm{px}} - p^* \|^2` up to a constant (the bias term of
    the distillation bound of Menon et al. 2021; :mod:`selfdistill.ptloss.search`). The lowest score among
    the *eligible* rows (converged and, by default, certified convex) wins; ties go to the lowest row, so
    ``eps = 0`` wins unless a perturbation is strictly better.

    Parameters
    ----------
    teacher_probs_val : Tensor or ndarray, shape (N, C)
        The teacher's ``T = 1`` probabilities on a labeled validation set (rows sum to 1 within
        ``prob_atol``).
    labels_val : Tensor or ndarray, shape (N,)
        Integer class indices in ``[0, C)``.
    M : int, default 5
        Perturbed series orders (the number of columns of each candidate).
    n_candidates : int, default 200
        S, the number of candidates, ``eps = 0`` included.
    temperature : float or sequence of float, default 1.0
        One temperature or a grid; each candidate is scored at each (a table row per pair), and the
        selection is a pair ``(eps, T)``. The ``eps = 0`` rows are temperature KD at each ``T``.
    form : {"full", "truncated"}, default "full"
        The PTLoss form the student will be trained with.
    space : {"softened", "student"}, default "softened"
        Score the proxy in the softened space (the target of the student's tempered softmax) or as the
        student's ``T = 1`` prediction (:func:`~selfdistill.ptloss.proxy_teacher`).
    scale : float, default 0.9
        Size of the random candidates (:func:`~selfdistill.ptloss.sample_candidates`).
    distribution : {"relative", "uniform", "normal"}, default "relative"
        How candidates are drawn; ``"relative"`` with ``scale < 1`` gives convex problems only.
    seed : int, default 0
        Seed of the candidate draw.
    criterion : {"brier", "tv", "nll"}, default "brier"
        The score: Brier, total variation to the label, or negative log-likelihood of the label.
    class_wise : bool, default True
        Candidates of shape ``(C, M)`` (per class) or ``(M,)`` (shared by all classes).
    include_zero : bool, default True
        Make candidate 0 the zero perturbation.
    candidates : Tensor, shape (S, C, M) or (S, 1, M), optional
        Given candidates instead of the random draw.
    require_convex : bool, default True
        Only rows whose proxy problem is certified convex are eligible (a non-convex problem has several
        local minimisers, and the one scored need not be the one training reaches).
    dtype : torch.float32 or torch.float64, default torch.float32
        The precision of the proxy solves.
    max_iter, tol, max_elements, prob_atol
        As in :func:`~selfdistill.ptloss.proxy_teacher`.
    min_converged : float, default 1.0
        The fraction of examples that must converge for a row to be eligible.

    Returns
    -------
    PerturbationSearchResult
        The table of every (candidate, temperature) row and the selection: ``result.ptloss_kwargs()`` are
        the arguments of the selected :class:`~selfdistill.ptloss.PTLoss`.

    Raises
    ------
    ValueError
        Bad probabilities or labels, an empty validation set, an unknown option, or no eligible row.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from selfdistill.ptloss import PTLoss, proxy_teacher, select_perturbation
    >>> _ = torch.manual_seed(0)
    >>> labels = torch.randint(0, 3, (60,))
    >>> probs = F.softmax(2.0 * F.one_hot(labels, 3) + torch.randn(60, 3), dim=1)  # a noisy teacher
    >>> search = select_perturbation(probs, labels, M=3, n_candidates=20, temperature=[1.0, 2.0, 4.0])
    >>> search.n_rows, search.row(0, 2.0)            # 20 candidates x 3 temperatures; eps = 0 at T = 2
    (60, 20)
    >>> sorted(search.ptloss_kwargs())
    ['epsilon', 'form', 'temperature']
    >>> loss_fn = PTLoss(**search.ptloss_kwargs())   # the selected (eps, T) and form, ready to train with
    >>> eps, T = search.selected
    >>> eps.shape, T in search.temperatures
    (torch.Size([3, 3]), True)

    The selected row's score is the Brier score of its proxy teacher, and never worse than ``eps = 0``:

    >>> proxy = proxy_teacher(probs, eps, temperature=T)
    >>> brier = ((proxy - F.one_hot(labels, 3)) ** 2).sum(1).mean().item()
    >>> abs(brier - search.best_score) < 1e-5, search.best_score <= search.baseline_score
    (True, True)
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not 0 < min_converged <= 1:
        raise ValueError(f"min_converged must be in (0, 1], got {min_converged!r}")
    temperatures = _temperature_grid(temperature)
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
    solve = {"max_iter": max_iter, "tol": tol, "max_elements": max_elements}

    n_cand, n_temp = eps.shape[0], len(temperatures)
    n_rows = n_cand * n_temp
    metrics = ("brier", "tv", "nll", "accuracy", "shift_tv", "eps_shift_tv")
    sums = {key: torch.zeros(n_rows, dtype=torch.float64) for key in metrics}
    n_converged = torch.zeros(n_rows, dtype=torch.float64)
    max_residual = torch.zeros(n_rows, dtype=torch.float64)
    n_nonconvex = torch.zeros(n_rows, dtype=torch.int64)
    n_boundary = torch.zeros(n_rows, dtype=torch.int64)
    tiny = torch.finfo(dtype).tiny
    for k, t in enumerate(temperatures):
        softened = soften_probabilities(probs, t)
        reference = _zero_proxy(softened, tuple(eps.shape[1:]), t, form, space, **solve)
        for cand, ex, p, info, _ in iter_proxy_blocks(softened, eps, form=form, **solve):
            p = to_space(p, t, space)
            rows = slice(k * n_cand + cand.start, k * n_cand + cand.stop)
            y = labels[ex]
            p_label = p.gather(-1, y.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(-1)  # (s, n)
            brier = (p * p).sum(-1) - 2 * p_label + 1
            sums["brier"][rows] += brier.sum(-1).double().cpu()
            sums["tv"][rows] += (1 - p_label).sum(-1).double().cpu()
            sums["nll"][rows] += (-torch.log(p_label.clamp_min(tiny))).sum(-1).double().cpu()
            sums["accuracy"][rows] += (p_label >= p.amax(-1)).sum(-1).double().cpu()  # (argmax is slow)
            sums["shift_tv"][rows] += (0.5 * (p - probs[ex]).abs().sum(-1)).sum(-1).double().cpu()
            sums["eps_shift_tv"][rows] += (0.5 * (p - reference[ex]).abs().sum(-1)).sum(-1).double().cpu()
            n_converged[rows] += info["converged"].sum(-1).double().cpu()
            max_residual[rows] = torch.maximum(max_residual[rows], info["residual"].amax(-1).double().cpu())
            n_nonconvex[rows] += info["nonconvex"].sum(-1).cpu()
            n_boundary[rows] += info["boundary"].sum(-1).cpu()

    table = {key: (value / n_examples).numpy() for key, value in sums.items()}
    table["candidate"] = np.tile(np.arange(n_cand), n_temp)
    table["temperature"] = np.repeat(np.asarray(temperatures, dtype=float), n_cand)
    margin = convexity_margin(eps.double().cpu(), form=form).numpy()
    table["convexity_margin"] = np.tile(margin, n_temp)
    table["convex"] = (table["convexity_margin"] > 0).astype(np.int64)
    table["converged_fraction"] = (n_converged / n_examples).numpy()
    table["converged"] = (table["converged_fraction"] >= min_converged).astype(np.int64)
    table["max_residual"] = max_residual.numpy()
    table["n_nonconvex"] = n_nonconvex.numpy()
    table["n_boundary"] = n_boundary.numpy()
    eligible = table["converged"].astype(bool) & (table["convex"].astype(bool) | (not require_convex))
    eligible &= np.isfinite(table[criterion])
    table["eligible"] = eligible.astype(np.int64)
    if not eligible.any():
        raise ValueError(
            f"no eligible candidate: of {n_rows} (candidate, temperature) rows, "
            f"{int(np.sum(table['converged'] == 0))} did not converge and "
            f"{int(np.sum(table['convex'] == 0))} are non-convex; lower scale, raise max_iter/tol, or pass "
            "require_convex=False"
        )
    best = int(np.argmin(np.where(eligible, table[criterion], np.inf)))
    settings = {
        "M": int(M),
        "n_candidates": int(n_cand),
        "temperatures": list(temperatures),
        "form": form,
        "space": space,
        "scale": float(scale),
        "distribution": distribution if candidates is None else "given",
        "seed": int(seed),
        "class_wise": bool(class_wise),
        "include_zero": bool(include_zero),
        "require_convex": bool(require_convex),
        "n_examples": int(n_examples),
        "n_classes": int(n_classes),
        "dtype": str(dtype).replace("torch.", ""),
        "tol": float(tol),
        "min_converged": float(min_converged),
    }
    return PerturbationSearchResult(
        epsilons=eps.cpu(), table=table, criterion=criterion, best_index=best, settings=settings
    )
