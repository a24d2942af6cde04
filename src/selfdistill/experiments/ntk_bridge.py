"""Does the kernel picture predict the network? The NTK bridge (issue 11, item 4).

For one data set and one network family, side by side, round by round:

- ``network``: the toolkit's neural chain (:func:`selfdistill.nn.chain.run_chain`, fresh initialization
  every round, xi = 1) of a :class:`DisplacementModel` (an MLP reparameterized around its initialization,
  centered logits), trained with :class:`CenteredLogitMSE` (squared loss on centered logits) by full-batch
  SGD with momentum and coupled weight decay ``wd`` to (near) convergence.
- ``kernel_alpha``: the exact kernel chain (:func:`selfdistill.kernel.self_distill`) on the empirical NTK of
  the network AT INITIALIZATION (:func:`selfdistill.nn.ntk.empirical_ntk`, the initialization of round 0 of
  the same seed), fixed ``alpha = K wd / 2``. In the linearized (lazy) regime this IS the network's chain:
  training to convergence with squared loss and an L2 penalty ``wd/2 ||theta - theta_0||^2`` is kernel
  ridge with ``alpha = K wd / 2`` (paper convention ``c = wd / 2``), no free parameter.
- ``kernel_eps``: the paper's eps-constrained chain on the same kernel, with eps matched to the network:
  eps = the network's round-0 training error on the original labels (same seed). Its round 0 then fits the
  labels exactly as well as the network's round 0; its c_t grows round by round until it collapses.

With ``linearization_check`` the first seed also gets the training error of the network's EXACT
linearization (full per-output NTK blocks), which splits the gap into the network leaving its
linearization and the one-kernel-per-output approximation; ``output_scale`` > 1 (with weight decay times
s^2 and learning rate over s^2) runs the same network in the lazy regime, a control in which the network
must follow its linearization.

Why these choices (what makes the comparison fair): the NTK picture is about squared loss on the outputs,
so the targets are one-hot labels regressed by the logits (one regression per output with a shared c).
The toolkit's chain hands the loss the teacher's SOFTMAX, which fixes the teacher's logits only up to a
constant per example; the loss therefore compares centered logits (``P = I - 11^T / C``) and recovers the
teacher's centered logits exactly as ``P log p``. The model outputs centered logits itself (same argmax,
same softmax), so its summed NTK is the kernel of exactly what the loss sees; one output's kernel is the sum
over outputs divided by ``C - 1 = trace(P)``. :class:`DisplacementModel` makes the network start at f = 0
(as kernel ridge does) and makes weight decay pull toward the initialization (as the ridge penalty of the
linearization does). Label noise on the training labels makes the rise-then-fall visible.

Per method, seed and round the bridge records the training error and accuracy on the original (noisy)
labels and on the clean ones, validation and test error and accuracy (error = squared error of the centered
outputs against the centered one-hot labels, summed over classes, mean over examples: the kernel chain's
``train_mse``), the mean square of the round's targets, the kernels' c_t and effective degrees of freedom
(trace of B_t), and how far each kernel's test predictions are from the network's. The summary names the
best round of each (by validation accuracy, and the oracle by test accuracy), the collapse round (the
eps-chain's criterion, targets' mean square <= eps, applied to all three) and the correlation of the
per-round test curves. Files: ``rounds.csv`` (per seed), ``per_round.csv`` (mean and std over seeds),
``summary.json``, ``bridge.png``, ``recipe.json``; ``network/`` holds the neural chain's own ``rounds.csv``
and its per-round checkpoints, ``checkpoints/`` the NTK cache: a rerun with the same recipe resumes, one
with another recipe replaces them.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from selfdistill.io import atomic_save_figure, atomic_write_csv, atomic_write_json


class DisplacementModel(nn.Module):
    """``f(x; delta) = s P [g(x; theta_0 + delta) - g(x; theta_0)]``: the network ``g`` reparameterized around
    its initialization theta_0 (frozen), trainable displacement ``delta`` starting at 0; ``s`` is
    ``output_scale`` (1: the plain network; large s: the lazy regime of Chizat, Oyallon, Bach 2019) and ``P``
    centers the outputs (``center_outputs``; softmax and argmax are unchanged).

    The function class and the NTK at initialization are those of ``g`` (the Jacobian with respect to delta
    at 0 is the Jacobian of g at theta_0), but f starts at exactly 0 and coupled weight decay on the
    trainable parameters penalizes ``||theta - theta_0||^2`` (Hu, Li, Yu 2020: L2 regularization toward the
    initialization). In the linearized regime, training f with squared loss and weight decay ``wd`` to its
    minimum is kernel ridge regression with the NTK of g and ``alpha = K wd / 2`` (K training points).
    """

    def __init__(self, base: nn.Module, output_scale: float = 1.0, center_outputs: bool = True):
        super().__init__()
        if not (math.isfinite(output_scale) and output_scale > 0):
            raise ValueError(f"output_scale must be a positive finite number, got {output_scale!r}")
        self.output_scale = float(output_scale)
        self.center_outputs = bool(center_outputs)
        if any(True for _ in base.buffers()):
            raise ValueError(
                "DisplacementModel supports models without buffers (no BatchNorm): evaluating g at theta_0 "
                "and at theta_0 + delta would otherwise update the running statistics twice per step"
            )
        self.base = copy.deepcopy(base).requires_grad_(False)  # theta_0; the caller's module is untouched
        self.names = [name for name, _ in base.named_parameters()]
        self.delta = nn.ParameterList([nn.Parameter(torch.zeros_like(p)) for _, p in base.named_parameters()])

    def forward(self, x: Tensor) -> Tensor:
        moved = {
            name: p0 + d for name, p0, d in zip(self.names, self.base.parameters(), self.delta, strict=True)
        }
        with torch.no_grad():
            start = self.base(x)
        out = self.output_scale * (functional_call(self.base, moved, (x,)) - start)
        return out - out.mean(dim=-1, keepdim=True) if self.center_outputs else out


class CenteredLogitMSE(nn.Module):
    """Squared loss between CENTERED logits: ``(1/N) sum_i ||P s_i - P t_i||^2``, ``P = I - 11^T / C``.

    The toolkit's chain hands a loss the teacher's softmax ``p = softmax(z)``, which determines the teacher's
    logits only up to a constant per example; ``P log p = P z`` recovers them exactly. So each round regresses
    the student's centered logits on the teacher's centered logits (round 0: on the centered one-hot labels),
    with squared loss: the setting in which a linearized network is a kernel ridge regression of the targets,
    i.e. the kernel chain. A target row is read as a label when it is exactly one-hot (entries 0 and 1), as
    a teacher's softmax when every entry is > 0 (a float32 softmax is exactly one-hot only for logit gaps
    above about 100); anything else (e.g. mixed targets with xi < 1, which are not linear in the logits) is
    refused.
    """

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        if student_logits.ndim != 2 or target_probs.shape != student_logits.shape:
            raise ValueError(
                f"CenteredLogitMSE expects logits and targets of the same shape (N, C); got "
                f"{tuple(student_logits.shape)} and {tuple(target_probs.shape)}"
            )
        is_label = ((target_probs == 0) | (target_probs == 1)).all(dim=1) & (target_probs.sum(dim=1) == 1)
        is_softmax = (target_probs > 0).all(dim=1)
        if not bool((is_label | is_softmax).all()):
            raise ValueError(
                "CenteredLogitMSE needs one-hot label rows or strictly positive teacher softmax rows "
                "(xi = 1); got rows with zeros that are not one-hot"
            )
        tiny = torch.finfo(target_probs.dtype).tiny
        target = torch.where(is_label[:, None], target_probs, torch.log(target_probs.clamp_min(tiny)))
        target = target - target.mean(dim=1, keepdim=True)
        centered = student_logits - student_logits.mean(dim=1, keepdim=True)
        return (centered - target.to(centered.dtype)).pow(2).sum(dim=1).mean()


METHODS: tuple[str, ...] = ("network", "kernel_alpha", "kernel_eps")
METHOD_LABELS = {
    "network": "network (toolkit chain)",
    "kernel_alpha": "kernel chain, NTK at init, alpha = K wd / 2",
    "kernel_eps": "kernel chain, NTK at init, eps = network's round-0 train error",
}
ROW_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "round",
    "train_mse",
    "train_acc",
    "train_acc_clean",
    "val_mse",
    "val_acc",
    "test_mse",
    "test_acc",
    "target_ms",
    "c",
    "dof",
    "collapsed",
    "test_rel_diff_to_network",
    "test_argmax_agree_with_network",
)
METRICS: tuple[str, ...] = ROW_COLUMNS[3:]


@dataclass(frozen=True)
class BridgeSpec:
    """One bridge run: data, network family, training, chain length, seeds (see the module docstring).

    Parameters
    ----------
    dataset : str, default="digits"
        A dataset of :func:`selfdistill.nn.load_data`.
    n_train : int, default=300
        Training points K (a subset; the NTK is K x K).
    val_fraction : float, default=0.1
        Share of the data held out for validation.
    label_noise : float, default=0.3
        Share of training labels replaced by random classes (makes the rise-then-fall visible).
    data_seed : int, default=0
        Seed of the subset, split and label noise.
    hidden_sizes : tuple of int, default=(512,)
        The MLP's hidden layers.
    output_scale : float, default=1.0
        s of :class:`DisplacementModel`; s > 1 (with weight decay times s^2 and learning rate over s^2) runs
        the same network in the lazy regime, a control in which the network must follow its linearization.
    weight_decay : float, default=0.02
        The network's coupled L2 weight decay on the displacement; the linearized network is kernel ridge
        with ``c = weight_decay / 2`` (paper convention), so it sets where the ridge sits in the NTK's
        spectrum.
    lr, momentum : float, default=0.02, 0.9
        Full-batch SGD.
    steps : int, default=1200
        SGD steps per round, enough to reach (near) the minimum.
    rounds : int, default=8
        Rounds of every chain (round 0 included).
    seeds : tuple of int, default=(0, 1, 2)
        Chain seeds (initialization of every round).
    ntk_chunk_size : int, default=128
        ``chunk_size`` of :func:`selfdistill.nn.ntk.empirical_ntk`.
    max_kernel_rounds : int, default=1000
        Cap on the eps-constrained kernel chain (run until collapse).
    linearization_check : bool, default=True
        For the first seed, also the training error per round of the network's EXACT linearization (kernel
        ridge with the full per-output NTK blocks; the kernel costs C times the summed one), which separates
        the network's departure from its linearization from the summed kernel's (one shared kernel per
        output) departure from the linearization.
    """

    dataset: str = "digits"
    n_train: int = 300
    val_fraction: float = 0.1
    label_noise: float = 0.3
    data_seed: int = 0
    hidden_sizes: tuple[int, ...] = (512,)
    output_scale: float = 1.0
    weight_decay: float = 0.02
    lr: float = 0.02
    momentum: float = 0.9
    steps: int = 1200
    rounds: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    ntk_chunk_size: int = 128
    max_kernel_rounds: int = 1000
    linearization_check: bool = True

    def __post_init__(self) -> None:
        if int(self.n_train) != self.n_train or self.n_train < 2:
            raise ValueError(f"n_train must be an integer >= 2, got {self.n_train!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay > 0):
            raise ValueError(
                f"weight_decay must be > 0 (the kernel side is ridge with alpha = K weight_decay / 2), "
                f"got {self.weight_decay!r}"
            )
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, got {self.rounds!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        data["seeds"] = list(self.seeds)
        return data


#: the shipped run of `selfdistill reproduce --what ntk`
DEFAULT_SPEC = BridgeSpec()
#: `--quick`: a smoke test of the same pipeline (seconds, numbers not meaningful)
QUICK_SPEC = BridgeSpec(n_train=120, hidden_sizes=(128,), steps=300, rounds=3, seeds=(0, 1))


# ------------------------------------------------------------------------------------------------ pieces
def bridge_data(spec: BridgeSpec):
    """The data splits of the bridge (label noise on the training labels only)."""
    from selfdistill.nn.data import load_data

    return load_data(
        spec.dataset,
        val_fraction=spec.val_fraction,
        label_noise=spec.label_noise,
        seed=spec.data_seed,
        subset=spec.n_train,
    )


def model_factory(
    spec: BridgeSpec, num_classes: int, input_shape: tuple[int, ...]
) -> Callable[[], nn.Module]:
    """Builds a fresh :class:`DisplacementModel` around ``build_model("mlp", ...)`` (seeded by the caller)."""
    from selfdistill.nn.models import build_model

    def factory() -> nn.Module:
        base = build_model("mlp", num_classes, input_shape, hidden_sizes=tuple(spec.hidden_sizes))
        return DisplacementModel(base, output_scale=spec.output_scale)

    return factory


def centered_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """P onehot(labels), P = I - 11^T / C (float64)."""
    return np.eye(num_classes)[np.asarray(labels, dtype=np.int64)] - 1.0 / num_classes


def network_ntk(model: nn.Module, x_train: Tensor, x_eval: Tensor, num_classes: int, chunk_size: int):
    """One output's kernel of the centered model, ``sum_c Theta_c / (C - 1)``, float64 NumPy: (train x train,
    eval x train)."""
    from selfdistill.nn.ntk import empirical_ntk

    scale = 1.0 / (num_classes - 1)
    gram = empirical_ntk(model, x_train, dtype=torch.float64, chunk_size=chunk_size).cpu().numpy() * scale
    cross = (
        empirical_ntk(model, x_eval, x_train, dtype=torch.float64, chunk_size=chunk_size).cpu().numpy()
        * scale
    )
    return gram, cross


def exact_linearization_train_mse(
    model: nn.Module, x_train: Tensor, labels: np.ndarray, alpha: float, rounds: int, chunk_size: int
) -> list[float]:
    """Training error on ``labels`` per round of the chain of the network's exact linearization: kernel ridge
    with the full (K C) x (K C) NTK of the (centered) model, ``F_{t+1} = M (M + alpha I)^{-1} F_t``, F_0 the
    labels (the fixed-alpha chain without the one-kernel-per-output approximation)."""
    from selfdistill.nn.ntk import empirical_ntk

    blocks = empirical_ntk(model, x_train, dtype=torch.float64, chunk_size=chunk_size, per_output=True)
    n, _, c, _ = blocks.shape
    full = blocks.permute(0, 2, 1, 3).reshape(n * c, n * c).cpu().numpy()
    eigenvalues, vectors = np.linalg.eigh(full)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    shrink = eigenvalues / (eigenvalues + alpha)
    y = labels.reshape(-1)
    z = vectors.T @ y
    errors = []
    for _ in range(rounds):
        z = shrink * z
        fitted = vectors @ z
        errors.append(float(np.sum((fitted - y) ** 2) / n))
    return errors


def _metrics(
    outputs: dict[str, np.ndarray], data, clean_train: np.ndarray, num_classes: int
) -> dict[str, float]:
    def mse(f: np.ndarray, y: np.ndarray) -> float:
        return (
            float(np.mean(np.sum((f - centered_one_hot(y, num_classes)) ** 2, axis=1)))
            if len(y)
            else math.nan
        )

    def acc(f: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(f.argmax(axis=1) == y)) if len(y) else math.nan

    y_train = data.y_train.numpy()
    y_val = data.y_val.numpy()
    y_test = data.y_test.numpy()
    return {
        "train_mse": mse(outputs["train"], y_train),
        "train_acc": acc(outputs["train"], y_train),
        "train_acc_clean": acc(outputs["train"], clean_train),
        "val_mse": mse(outputs["val"], y_val),
        "val_acc": acc(outputs["val"], y_val),
        "test_mse": mse(outputs["test"], y_test),
        "test_acc": acc(outputs["test"], y_test),
    }


def _pearson(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


# ------------------------------------------------------------------------------------------------ result
@dataclass
class BridgeResult:
    """Per (method, seed, round) rows, their mean/std over seeds, and the comparison; prints, plots, saves.

    Attributes
    ----------
    rows : list of dict
        One row per method (``"network"``, ``"kernel_alpha"``, ``"kernel_eps"``), seed and round, with the
        columns of ``ROW_COLUMNS``.
    spec : BridgeSpec
        What was run.
    info : dict
        Sizes, eps per seed, collapse rounds, the NTK spectrum, timings, the linearization check.
    """

    rows: list[dict[str, Any]]
    spec: BridgeSpec
    info: dict[str, Any] = field(default_factory=dict)

    def values(self, method: str, metric: str, round_index: int) -> list[float]:
        return [
            float(r[metric]) for r in self.rows if r["method"] == method and int(r["round"]) == round_index
        ]

    @property
    def rounds(self) -> list[int]:
        return sorted({int(r["round"]) for r in self.rows})

    def per_round(self) -> list[dict[str, Any]]:
        """Mean and sample std over seeds of every metric, per method and round."""
        table = []
        for method in METHODS:
            for t in self.rounds:
                entry: dict[str, Any] = {"method": method, "round": t}
                for metric in METRICS:
                    vals = [v for v in self.values(method, metric, t) if math.isfinite(v)]
                    entry[f"{metric}_mean"] = statistics.fmean(vals) if vals else math.nan
                    entry[f"{metric}_std"] = (
                        statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else math.nan)
                    )
                table.append(entry)
        return table

    def curve(self, method: str, metric: str) -> list[float]:
        lookup = {(e["method"], e["round"]): e for e in self.per_round()}
        return [lookup[(method, t)][f"{metric}_mean"] for t in self.rounds]

    def best_round(self, method: str, by: str = "val") -> int:
        """Round with the highest mean accuracy on ``by`` ("val": model selection; "test": the oracle);
        ties: lower mean error on the same split, then the earlier round."""
        acc, err = self.curve(method, f"{by}_acc"), self.curve(method, f"{by}_mse")
        order = sorted(range(len(acc)), key=lambda i: (-acc[i], err[i], i))
        return self.rounds[order[0]]

    def collapse_rounds(self, method: str) -> dict[str, int | None]:
        """Per seed, the first round whose targets have mean square <= eps (eps of that seed's eps chain):
        the eps chain's collapse, applied to every method (None: not within the rounds run)."""
        out: dict[str, int | None] = {}
        for seed in self.spec.seeds:
            eps = self.info["epsilon"][str(seed)]
            hit = None
            for r in sorted(
                (r for r in self.rows if r["method"] == method and r["seed"] == seed),
                key=lambda r: r["round"],
            ):
                if r["target_ms"] <= eps * (1 + 1e-9) or r["collapsed"]:
                    hit = int(r["round"])
                    break
            if method == "kernel_eps" and hit is None:
                hit = self.info["kernel_eps_collapse_round"][str(seed)]
            out[str(seed)] = hit
        return out

    def comparison(self) -> dict[str, Any]:
        """How well each kernel chain predicts the network (computed from the rows)."""
        net_best = self.best_round("network", "val")
        net_oracle = self.best_round("network", "test")
        result: dict[str, Any] = {
            "network": {
                "best_round_by_val": net_best,
                "best_round_by_test": net_oracle,
                "collapse_round_per_seed": self.collapse_rounds("network"),
            }
        }
        for method in ("kernel_alpha", "kernel_eps"):
            best, oracle = self.best_round(method, "val"), self.best_round(method, "test")
            result[method] = {
                "best_round_by_val": best,
                "best_round_by_test": oracle,
                "same_best_round_by_val": best == net_best,
                "same_best_round_by_test": oracle == net_oracle,
                "collapse_round_per_seed": self.collapse_rounds(method),
                "pearson_test_acc": _pearson(
                    self.curve("network", "test_acc"), self.curve(method, "test_acc")
                ),
                "pearson_test_mse": _pearson(
                    self.curve("network", "test_mse"), self.curve(method, "test_mse")
                ),
                "pearson_train_mse": _pearson(
                    self.curve("network", "train_mse"), self.curve(method, "train_mse")
                ),
                "test_rel_diff_to_network_per_round": self.curve(method, "test_rel_diff_to_network"),
                "test_argmax_agree_per_round": self.curve(method, "test_argmax_agree_with_network"),
            }
        return result

    def summary(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            **self.info,
            "comparison": self.comparison(),
            "findings": self.findings(),
            "per_round": self.per_round(),
        }

    def findings(self) -> list[str]:
        """Plain sentences computed from the numbers of this run."""
        comp = self.comparison()
        lines = []
        for method in METHODS:
            acc = self.curve(method, "test_acc")
            lines.append(
                f"{method}: test accuracy {acc[0]:.3f} at round 0, {max(acc):.3f} at best (round "
                f"{comp[method]['best_round_by_test']}), {acc[-1]:.3f} at round {self.rounds[-1]}; best "
                f"round by validation {comp[method]['best_round_by_val']}; collapse round per seed "
                f"{comp[method]['collapse_round_per_seed']}"
            )
        for method in ("kernel_alpha", "kernel_eps"):
            c = comp[method]
            diff = c["test_rel_diff_to_network_per_round"]
            agree = c["test_argmax_agree_per_round"]
            lines.append(
                f"{method} vs network: Pearson r of the per-round test accuracy "
                f"{c['pearson_test_acc']:.3f}, of the test error {c['pearson_test_mse']:.3f}, of the train "
                f"error {c['pearson_train_mse']:.3f}; "
                f"same best round by validation: {c['same_best_round_by_val']}, by test: "
                f"{c['same_best_round_by_test']}; test predictions differ by {diff[0]:.2f} (relative) at "
                f"round 0 and {diff[-1]:.2f} at round {self.rounds[-1]}, argmax agreement {agree[0]:.3f} -> "
                f"{agree[-1]:.3f}"
            )
        lin = self.info.get("exact_linearization")
        if lin:
            seed = lin["seed"]

            def err(method: str) -> float:
                return next(
                    float(r["train_mse"])
                    for r in self.rows
                    if r["method"] == method and r["seed"] == seed and r["round"] == 0
                )

            lines.append(
                f"round-0 training error, seed {seed}: network {err('network'):.4f}, its exact linearization "
                f"(full per-output NTK) {lin['train_mse'][0]:.4f}, the summed-NTK kernel chain "
                f"{err('kernel_alpha'):.4f}"
            )
        return lines

    def table(self) -> str:
        cols = [
            ("train_mse", "train err"),
            ("train_acc", "train acc"),
            ("test_mse", "test err"),
            ("test_acc", "test acc"),
            ("dof", "dof"),
        ]
        header = f"{'method':>12} {'round':>5} " + " ".join(f"{title:>9}" for _, title in cols)
        lines = [header, "-" * len(header)]
        for e in self.per_round():
            cells = [
                f"{e[f'{c}_mean']:9.4f}" if math.isfinite(e[f"{c}_mean"]) else f"{'-':>9}" for c, _ in cols
            ]
            lines.append(f"{e['method']:>12} {e['round']:>5} " + " ".join(cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path) -> Path:
        """bridge.png: test accuracy, test error, validation accuracy, train error on the original labels,
        effective degrees of freedom (trace of B_t) and the kernels' distance to the network, per round."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(15, 8.5))
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 3)
        panels = [
            ("test_acc", "test accuracy (clean labels)", False),
            ("test_acc", "test accuracy, zoom on the network and the alpha chain", True),
            ("test_mse", "test error (centered one-hot, squared)", False),
            ("train_mse", "train error on the original (noisy) labels", False),
            ("dof", "effective degrees of freedom, trace of B_t", False),
            ("test_rel_diff_to_network", "||f_kernel - f_network|| / ||f_network|| on test", False),
        ]
        styles = {
            "network": ("k", "o", "-"),
            "kernel_alpha": ("tab:blue", "s", "--"),
            "kernel_eps": ("tab:orange", "^", ":"),
        }
        lookup = {(e["method"], e["round"]): e for e in self.per_round()}
        rounds = np.asarray(self.rounds)
        from matplotlib.ticker import MaxNLocator

        for ax, (metric, title, zoom) in zip(axes.flat, panels, strict=True):
            shown = []
            for method in METHODS:
                if metric == "test_rel_diff_to_network" and method == "network":
                    continue  # identically 0
                mean = np.array([lookup[(method, t)][f"{metric}_mean"] for t in self.rounds])
                std = np.array([lookup[(method, t)][f"{metric}_std"] for t in self.rounds])
                if not np.any(np.isfinite(mean)):
                    continue
                live = np.array([lookup[(method, t)]["collapsed_mean"] == 0 for t in self.rounds])
                shown.extend(mean[live & np.isfinite(mean)])
                color, marker, line = styles[method]
                ax.plot(rounds, mean, color=color, marker=marker, linestyle=line, label=METHOD_LABELS[method])
                if len(self.spec.seeds) > 1:
                    ax.fill_between(rounds, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
                if metric == "test_acc":
                    best = self.best_round(method, "val")
                    ax.plot(
                        [best],
                        [lookup[(method, best)]["test_acc_mean"]],
                        marker="*",
                        markersize=16,
                        color=color,
                        linestyle="none",
                    )
            lin = self.info.get("exact_linearization")
            if metric == "train_mse" and lin:
                ax.plot(
                    rounds,
                    lin["train_mse"][: len(rounds)],
                    color="tab:gray",
                    marker="x",
                    linestyle="-.",
                    label=f"exact linearization, full per-output NTK (seed {lin['seed']})",
                )
                ax.legend(fontsize=7, loc="lower right")
            if zoom and shown:
                low = min(min(self.curve(m, "test_acc")) for m in ("network", "kernel_alpha"))
                high = max(shown)
                pad = 0.1 * max(high - low, 1e-3)
                ax.set_ylim(low - pad, high + pad)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8, loc="best")
        axes[0, 0].text(
            0.01, 0.01, "star: best round by validation accuracy", transform=axes[0, 0].transAxes, fontsize=7
        )
        s = self.spec
        fig.suptitle(
            f"NTK bridge: {s.dataset}, {self.info.get('n_train', s.n_train)} training points, "
            f"{s.label_noise:.0%} label noise, MLP {list(s.hidden_sizes)}, wd {s.weight_decay:g} "
            f"(c = wd/2 = {s.weight_decay / 2:g}), {len(s.seeds)} seed(s), mean +- std",
            fontsize=11,
        )
        fig.tight_layout()
        return atomic_save_figure(fig, path)

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        atomic_write_csv(out / "rounds.csv", self.rows, ROW_COLUMNS)
        per_round = self.per_round()
        atomic_write_csv(out / "per_round.csv", per_round, list(per_round[0].keys()))
        atomic_write_json(out / "summary.json", self.summary())
        self.plot(out / "bridge.png")


# ------------------------------------------------------------------------------------------------ the run
def _network_outputs(model: nn.Module, data) -> dict[str, np.ndarray]:
    from selfdistill.nn.training import predict_logits

    out = {}
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        logits = predict_logits(model, x).double().numpy() if x.shape[0] else np.zeros((0, data.num_classes))
        out[split] = logits - logits.mean(axis=1, keepdims=True)
    return out


def _prepare_folder(out: Path, spec: BridgeSpec, verbose: bool) -> None:
    """A folder holding a run of ANOTHER recipe gets its caches (network chain, NTK) replaced."""
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.json"
    recipe = spec.to_dict()
    if recipe_path.is_file():
        try:
            previous = json.loads(recipe_path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != recipe:
            for sub in (out / "network", out / "checkpoints"):
                if sub.is_dir():
                    shutil.rmtree(sub)
            if verbose:
                print(f"{out} held a run of another recipe: its checkpoints were replaced")
    atomic_write_json(recipe_path, recipe)


def run_ntk_bridge(
    out_dir: str | Path, spec: BridgeSpec | None = None, *, quick: bool = False, verbose: bool = True
) -> BridgeResult:
    """Run (or resume) the bridge into ``out_dir`` and save its files; see the module docstring.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (``rounds.csv``, ``per_round.csv``, ``summary.json``, ``bridge.png``,
        ``recipe.json``, ``network/``, ``checkpoints/``). A rerun with the same recipe resumes; one with
        another recipe replaces its checkpoints.
    spec : BridgeSpec or None, default=None
        What to run (default: ``DEFAULT_SPEC``, or ``QUICK_SPEC`` with ``quick=True``).
    quick : bool, default=False
        The smoke-test spec (seconds; numbers not meaningful).
    verbose : bool, default=True
        Print progress.

    Returns
    -------
    BridgeResult
    """
    from selfdistill.kernel import self_distill
    from selfdistill.nn.chain import ChainSpec, checkpoint_path, derive_seed, fresh_model, run_chain
    from selfdistill.nn.checkpoint import load_checkpoint
    from selfdistill.nn.training import TrainSpec

    spec = spec if spec is not None else (QUICK_SPEC if quick else DEFAULT_SPEC)
    out = Path(out_dir)
    _prepare_folder(out, spec, verbose)
    log = print if verbose else (lambda *a, **k: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small MLPs: one thread is as fast and robust to a shared CPU
    started = time.perf_counter()
    try:
        data = bridge_data(spec)
        C = int(data.num_classes)
        K = data.num_train
        factory = model_factory(spec, C, tuple(data.input_shape))
        train_spec = TrainSpec(
            optimizer="sgd",
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            batch_size=K,
            steps=spec.steps,
            check_every=spec.steps,
        )
        chain_spec = ChainSpec(rounds=spec.rounds, seeds=tuple(spec.seeds), train=train_spec, xi=1.0)
        log(
            f"network chain: {len(spec.seeds)} seed(s) x {spec.rounds} rounds x {spec.steps} full-batch SGD "
            f"steps on {K} points"
        )
        chain = run_chain(data, factory, CenteredLogitMSE(), chain_spec, out_dir=out / "network")
        t_network = time.perf_counter() - started

        clean_train = data.clean_y_train.numpy()
        labels = centered_one_hot(data.y_train.numpy(), C)
        n_val = data.num_val
        x_eval = torch.cat([data.x_val, data.x_test])
        rows: list[dict[str, Any]] = []
        info: dict[str, Any] = {
            "n_train": K,
            "n_val": n_val,
            "n_test": data.num_test,
            "num_classes": C,
            "epsilon": {},
            "kernel_eps_collapse_round": {},
            "kernel_eps_status": {},
            "ntk_spectrum": {},
            "c_alpha": spec.weight_decay / 2,
            "alpha": K * spec.weight_decay / 2,
        }
        t_ntk = 0.0
        for seed in spec.seeds:
            # the network's centered outputs per round, from the chain's checkpoints
            net_out = []
            for t in range(spec.rounds):
                model = fresh_model(factory, derive_seed(seed, t, "init"))
                model.load_state_dict(
                    load_checkpoint(checkpoint_path(out / "network", seed, t))["state_dict"]
                )
                net_out.append(_network_outputs(model, data))
            # the NTK of round 0's initialization (cached next to the checkpoints)
            cache = out / "checkpoints" / f"ntk_seed{seed}.npz"
            if cache.is_file():
                stored = np.load(cache)
                gram, cross = stored["gram"], stored["cross"]
            else:
                t0 = time.perf_counter()
                model0 = fresh_model(factory, derive_seed(seed, 0, "init"))
                gram, cross = network_ntk(model0, data.x_train, x_eval, C, spec.ntk_chunk_size)
                t_ntk += time.perf_counter() - t0
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npz")
                np.savez(tmp, gram=gram, cross=cross)
                tmp.replace(cache)
            eigenvalues = np.linalg.eigvalsh(gram) / K
            info["ntk_spectrum"][str(seed)] = {
                "d_max": float(eigenvalues[-1]),
                "d_median": float(np.median(eigenvalues)),
                "d_min": float(eigenvalues[0]),
            }
            net_metrics = [_metrics(o, data, clean_train, C) for o in net_out]
            eps = net_metrics[0]["train_mse"]
            info["epsilon"][str(seed)] = eps
            chains = {
                "kernel_alpha": self_distill(
                    gram, labels, alpha=K * spec.weight_decay / 2, n_rounds=spec.rounds
                ),
                "kernel_eps": self_distill(gram, labels, epsilon=eps, max_rounds=spec.max_kernel_rounds),
            }
            info["kernel_eps_collapse_round"][str(seed)] = chains["kernel_eps"].collapse_round
            info["kernel_eps_status"][str(seed)] = chains["kernel_eps"].status
            for t in range(spec.rounds):
                targets_ms = (
                    float(np.mean(np.sum(labels**2, axis=1)))
                    if t == 0
                    else float(np.mean(np.sum(net_out[t - 1]["train"] ** 2, axis=1)))
                )
                rows.append(
                    {
                        "method": "network",
                        "seed": int(seed),
                        "round": t,
                        **net_metrics[t],
                        "target_ms": targets_ms,
                        "c": math.nan,
                        "dof": math.nan,
                        "collapsed": 0,
                        "test_rel_diff_to_network": 0.0,
                        "test_argmax_agree_with_network": 1.0,
                    }
                )
            for method, res in chains.items():
                z_ms = res.mean_square_labels  # ||y_t||^2 / K for t = 0..T
                for t in range(spec.rounds):
                    fitted = t < res.n_rounds
                    if fitted:
                        pred_eval = res.predict(cross, round=t)
                        outputs = {
                            "train": res.train_predictions[t],
                            "val": pred_eval[:n_val],
                            "test": pred_eval[n_val:],
                        }
                    else:  # collapsed (or stopped): f = 0 from here on
                        outputs = {
                            s: np.zeros((n, C))
                            for s, n in (("train", K), ("val", n_val), ("test", data.num_test))
                        }
                    net_test = net_out[t]["test"]
                    rows.append(
                        {
                            "method": method,
                            "seed": int(seed),
                            "round": t,
                            **_metrics(outputs, data, clean_train, C),
                            "target_ms": float(z_ms[t]) if t < len(z_ms) else 0.0,
                            "c": float(res.c[t]) if fitted else math.inf,
                            "dof": float(res.effective_basis[t]) if fitted else 0.0,
                            "collapsed": int(not fitted),
                            "test_rel_diff_to_network": float(
                                np.linalg.norm(outputs["test"] - net_test) / np.linalg.norm(net_test)
                            ),
                            "test_argmax_agree_with_network": float(
                                np.mean(outputs["test"].argmax(axis=1) == net_test.argmax(axis=1))
                            ),
                        }
                    )
        if spec.linearization_check:
            seed = spec.seeds[0]
            cache = out / "checkpoints" / f"linearization_seed{seed}.json"
            if cache.is_file():
                curve = json.loads(cache.read_text())
            else:
                t0 = time.perf_counter()
                log(f"exact linearization (full per-output NTK, seed {seed})")
                curve = exact_linearization_train_mse(
                    fresh_model(factory, derive_seed(seed, 0, "init")),
                    data.x_train,
                    labels,
                    K * spec.weight_decay / 2,
                    spec.rounds,
                    spec.ntk_chunk_size,
                )
                t_ntk += time.perf_counter() - t0
                atomic_write_json(cache, curve)
            info["exact_linearization"] = {"seed": int(seed), "train_mse": curve}
        info["seconds"] = {"total": time.perf_counter() - started, "network_chain": t_network, "ntk": t_ntk}
        info["network_chain_rows"] = chain.rows
    finally:
        torch.set_num_threads(threads)
    result = BridgeResult(rows=rows, spec=spec, info=info)
    result.save(out)
    log(result.table())
    log("\nhow well the kernel predicts the network (computed from this run):")
    for line in result.findings():
        log(f"  - {line}")
    return result


__all__ = [
    "DEFAULT_SPEC",
    "METHODS",
    "QUICK_SPEC",
    "BridgeResult",
    "BridgeSpec",
    "CenteredLogitMSE",
    "DisplacementModel",
    "bridge_data",
    "centered_one_hot",
    "model_factory",
    "network_ntk",
    "run_ntk_bridge",
]
