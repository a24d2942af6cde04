"""Multi-round self-distillation chains of neural networks (Mobahi, Farajtabar, Bartlett 2020, Section 5).

Round 0 trains a freshly initialized model on the one-hot training labels y_0. Round t >= 1 trains ANOTHER
freshly initialized model (seed derived from (chain seed, round), recorded) on the targets

    y_t = xi * softmax(f_{t-1}(x)) + (1 - xi) * y_0            (xi = 1: pure self-distillation;
                                                               xi < 1: Borup & Andersen 2021 mixing)

where f_{t-1} is round t-1's model, deep-copied into a FROZEN teacher (requires_grad False, eval mode,
evaluated under no_grad); the teacher's softmax is taken at T = 1 because the temperature KL loss softens
probabilities itself. Without augmentation the teacher's outputs on the training set are computed once
and cached: they are the logits of the evaluation pass that ends the previous round (same weights, same
inputs), so a round makes one no-grad pass over x_train, not two. With augmentation the teacher sees the
same augmented batch as the student. Hard
labels (Appendix D.3) are the loss ``hard_ce`` (argmax of the teacher, then cross-entropy).

Per seed and round the chain records, in ``rounds.csv`` (columns :data:`ROUND_COLUMNS` first): accuracy and
loss on the ORIGINAL training labels (one-hot targets, the chain's loss), the loss against the round's own
targets, validation and test accuracy and loss, steps and seconds. Model selection ("best round") looks at
validation only; test numbers are reported, never used to choose.

Data: tensors (a :class:`~selfdistill.nn.DataSplits`) or map-style Datasets (a
:class:`~selfdistill.nn.DatasetSplits`), checked before any training (bad items, labels, shapes, the
model's output width: :mod:`selfdistill.nn.inputs`); both run the same code and give the same numbers on the
same examples. Most users call :func:`selfdistill.nn.self_distill`, which builds the arguments of
:func:`run_chain` from plain values.

Checkpoints and resume: after each finished round, ``checkpoints/seed{S}/round{T}.pt`` holds the model
weights and the round's metric row, written atomically, with the sha256 of the weights, the fingerprint
of the run's settings (``settings``) and the sha256 of the weights of the round's teacher
(``selfdistill.nn.checkpoint``). A chain started again in the same folder loads the finished rounds and
continues after the last one; every random choice of a round depends only on (seed, round) and the
previous round's weights, so the result is identical to an uninterrupted run. A checkpoint is used only if
it verifies: its hashes match its content (not damaged on disk), it was written with the same settings,
for the same seed and round, from the same teacher weights; otherwise the round is retrained and one line
on stderr names the file and the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfdistill.nn.checkpoint import (
    atomic_write_csv,
    read_verified_checkpoint,
    save_verified_checkpoint,
    state_dict_sha256,
)
from selfdistill.nn.distributed import SINGLE_PROCESS, DistContext, barrier
from selfdistill.nn.inputs import (
    DatasetInputs,
    check_model_output,
    num_examples,
    prepare_data,
)
from selfdistill.nn.losses import check_loss_fits, mix_targets
from selfdistill.nn.training import (
    PERFORMANCE_SWITCHES,
    Augment,
    TargetFn,
    TrainResult,
    TrainSpec,
    TrainState,
    accuracy,
    loss_on,
    one_hot,
    predict_logits,
    train,
)
from selfdistill.stats import mean_std

ROUND_COLUMNS: tuple[str, ...] = (
    "seed",
    "round",
    "train_acc_original",
    "train_loss_original",
    "target_loss",
    "val_acc",
    "test_acc",
    "val_loss",
    "test_loss",
    "steps",
    "seconds",
)
# student_seed / batch_seed: the derived seeds of the round's initialization and batch order (batch_seed was
# called data_seed before data seeds, the split and label-noise axis, existed; old rows are renamed on load)
EXTRA_COLUMNS: tuple[str, ...] = ("train_acc_clean", "student_seed", "batch_seed")
METRIC_COLUMNS: tuple[str, ...] = (
    "train_acc_original",
    "train_loss_original",
    "target_loss",
    "val_acc",
    "test_acc",
    "val_loss",
    "test_loss",
    "train_acc_clean",
)

_STREAMS = {"init": 1, "data": 2, "torch": 3}


def derive_seed(seed: int, round_index: int, stream: str) -> int:
    """A 63-bit seed for one random stream ("init", "data", "torch") of one round of one chain seed."""
    state = np.random.SeedSequence([int(seed), int(round_index), _STREAMS[stream]]).generate_state(
        2, np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True)
class ChainSpec:
    """A chain: ``rounds`` rounds (0 .. rounds-1) for each of ``seeds``, trained with ``train``."""

    rounds: int
    seeds: tuple[int, ...]
    train: TrainSpec
    xi: float = 1.0
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(
                f"rounds must be an integer >= 1 (round 0 trains on the labels); got {self.rounds}"
            )
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if any(int(s) != s or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative integers; got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct; got {list(self.seeds)}")
        if not math.isfinite(self.xi):
            raise ValueError(f"xi (weight of the teacher in the targets) must be finite; got {self.xi}")


class ChainHooks:
    """Callbacks of a running chain (progress bars, logging); every method is optional to override."""

    def round_start(self, seed: int, round_index: int, total_steps: int) -> None: ...

    def step(self, step: int, loss: Tensor) -> None: ...

    def round_end(self, row: dict[str, Any], resumed: bool) -> None: ...


@dataclass
class NeuralChainResult:
    """Per-seed, per-round metrics of a neural chain, with its table, curves and best round.

    It prints as a mean ± std table (``print(result)``), plots its curves (:meth:`plot`), names the best
    round chosen on validation data (:attr:`best_round`, :meth:`best_round_by_val`) and saves as CSV
    (:meth:`save_csv`). ``rows`` holds one dict per seed and round (columns ``ROUND_COLUMNS`` and
    ``EXTRA_COLUMNS`` of :mod:`selfdistill.nn.chain`). (The kernel engine's result is
    :class:`selfdistill.kernel.ChainResult`, a different thing.)"""

    rows: list[dict[str, Any]]
    columns: tuple[str, ...] = ROUND_COLUMNS + EXTRA_COLUMNS
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted({int(r["seed"]) for r in self.rows})

    @property
    def rounds(self) -> list[int]:
        return sorted({int(r["round"]) for r in self.rows})

    def column(self, name: str, round_index: int) -> list[float]:
        return [float(r[name]) for r in self.rows if int(r["round"]) == round_index]

    def per_round(self) -> list[dict[str, Any]]:
        """Mean and (sample) standard deviation over seeds of every metric, per round."""
        table = []
        for t in self.rounds:
            entry: dict[str, Any] = {"round": t, "num_seeds": len(self.column("seed", t))}
            for name in METRIC_COLUMNS + ("steps", "seconds"):
                mean, std = mean_std(self.column(name, t))
                entry[f"{name}_mean"], entry[f"{name}_std"] = mean, std
            table.append(entry)
        return table

    def best_round_by_val(self) -> dict[str, Any]:
        """The round with the highest mean validation accuracy (ties: lower mean validation loss, then the
        earliest round; none without a validation split). Test accuracy there is reported, never used."""
        per_round = self.per_round()
        by_acc = [e for e in per_round if math.isfinite(e["val_acc_mean"])]
        if by_acc:
            best = max(by_acc, key=lambda e: (e["val_acc_mean"], -e["val_loss_mean"], -e["round"]))
            criterion = "val_acc_mean"
        else:
            return {"round": None, "criterion": "no validation split (val_fraction 0): nothing to select on"}
        per_seed = {}
        for s in self.seeds:
            seed_rows = [r for r in self.rows if int(r["seed"]) == s]
            best_row = max(
                seed_rows, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"]), -int(r["round"]))
            )
            per_seed[str(s)] = int(best_row["round"])
        return {
            "round": best["round"],
            "criterion": criterion,
            "val_acc_mean": best["val_acc_mean"],
            "val_acc_std": best["val_acc_std"],
            "test_acc_mean": best["test_acc_mean"],
            "test_acc_std": best["test_acc_std"],
            "round0_test_acc_mean": per_round[0]["test_acc_mean"] if per_round[0]["round"] == 0 else None,
            "per_seed_best_round": per_seed,
        }

    @property
    def best_round(self) -> int | None:
        """The round with the highest mean validation accuracy (None without a validation split); see
        :meth:`best_round_by_val`."""
        return self.best_round_by_val()["round"]

    def plot(self, axes: Sequence[Any] | None = None, *, title: str | None = None) -> Any:
        """Accuracy and loss per round, mean ± std over seeds (bands with two seeds or more), the best round
        by validation marked. Two panels: accuracy (training labels, clean training labels when they differ,
        validation, test) and loss on the true labels (training, validation, test).

        Parameters
        ----------
        axes : two matplotlib Axes, optional
            Where to draw; default: a new pyplot figure.
        title : str, optional
            The figure's title.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from selfdistill.nn.plots import summarize_by_round

        if axes is None:
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        ax_acc, ax_loss = axes
        table = {
            name: np.array([float(r.get(name, float("nan"))) for r in self.rows], dtype=float)
            for name in ("seed", "round", *METRIC_COLUMNS)
        }

        def band(ax: Any, column: str, label: str, color: str) -> None:
            if not np.isfinite(table[column]).any():
                return
            summary = summarize_by_round(table, column)
            ax.plot(summary.rounds, summary.mean, marker="o", markersize=4, label=label, color=color)
            if np.any(summary.count > 1):
                ax.fill_between(summary.rounds, summary.mean - summary.std, summary.mean + summary.std,
                                color=color, alpha=0.2, linewidth=0)  # fmt: skip

        band(ax_acc, "train_acc_original", "train (labels trained on)", "tab:blue")
        if not np.allclose(table["train_acc_clean"], table["train_acc_original"], equal_nan=True):
            band(ax_acc, "train_acc_clean", "train (clean labels)", "tab:purple")
        band(ax_acc, "val_acc", "validation", "tab:orange")
        band(ax_acc, "test_acc", "test", "tab:green")
        band(ax_loss, "train_loss_original", "train", "tab:blue")
        band(ax_loss, "val_loss", "validation", "tab:orange")
        band(ax_loss, "test_loss", "test", "tab:green")
        best = self.best_round
        for ax, ylabel in ((ax_acc, "accuracy"), (ax_loss, "loss on the true labels")):
            if best is not None:
                ax.axvline(best, color="k", linestyle=":", linewidth=1, label=f"best by validation: {best}")
            ax.set_xlabel("round")
            ax.set_ylabel(ylabel)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        n = len(self.seeds)
        note = f"mean ± std over {n} seed{'s' if n != 1 else ''}"
        ax_acc.figure.suptitle(f"{title} ({note})" if title else note, fontsize=10)
        return ax_acc.figure

    def summary(self) -> dict[str, Any]:
        return {
            **self.meta,
            "seeds": self.seeds,
            "rounds": self.rounds,
            "best_round_by_val": self.best_round_by_val(),
            "per_round": self.per_round(),
        }

    def table(self) -> str:
        """Per-round table, mean ± std over seeds."""
        cols = [
            ("train_acc_original", "train acc (y0)"),
            ("train_loss_original", "train loss (y0)"),
            ("target_loss", "target loss"),
            ("val_acc", "val acc"),
            ("test_acc", "test acc"),
        ]
        header = f"{'round':>5} " + " ".join(f"{title:>19}" for _, title in cols)
        lines = [header, "-" * len(header)]
        for entry in self.per_round():
            cells = [f"{entry[f'{c}_mean']:.4f} ± {entry[f'{c}_std']:.4f}" for c, _ in cols]
            lines.append(f"{entry['round']:>5} " + " ".join(f"{cell:>19}" for cell in cells))
        best = self.best_round_by_val()
        if best["round"] is not None:
            lines.append(
                f"best round by validation accuracy: {best['round']} (val {best['val_acc_mean']:.4f}, "
                f"test {best['test_acc_mean']:.4f} ± {best['test_acc_std']:.4f})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def save_csv(self, path: str | Path) -> None:
        """Write ``rows`` to ``path`` (``rounds.csv``, the file :mod:`selfdistill.nn.plots` reads),
        atomically."""
        atomic_write_csv(path, self.rows, self.columns)


def checkpoint_path(out_dir: Path, seed: int, round_index: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"seed{seed}" / f"round{round_index}.pt"


def count_checkpoints(out_dir: Path, spec: ChainSpec) -> int:
    """How many of the chain's rounds have a checkpoint file in ``out_dir`` (each is verified when used)."""
    return sum(checkpoint_path(out_dir, s, t).is_file() for s in spec.seeds for t in range(spec.rounds))


def spec_settings(spec: ChainSpec) -> dict[str, Any]:
    """The settings of ``spec`` that change a round's result (the default checkpoint fingerprint). A speed
    switch that is off is left out, so runs from before the switches existed keep their fingerprint."""
    train_settings = dataclasses.asdict(spec.train)
    for switch in PERFORMANCE_SWITCHES:
        if not train_settings[switch]:
            del train_settings[switch]
    return {"train": train_settings, "xi": spec.xi, "eval_batch_size": spec.eval_batch_size}


def fresh_model(model_factory: Callable[[], nn.Module], init_seed: int) -> nn.Module:
    """A new model initialized from ``init_seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return model_factory()


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A distinct deep copy of ``model``: parameters frozen, eval mode (call it under no_grad)."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def _nan_if_empty(fn: Callable[[], float], n: int) -> float:
    return fn() if n > 0 else float("nan")


def _split_metrics(
    model: nn.Module,
    x: Tensor | DatasetInputs,
    y: Tensor,
    num_classes: int,
    loss_fn: Callable,
    device,
    spec: ChainSpec,
) -> tuple[float, float]:
    if num_examples(x) == 0:
        return float("nan"), float("nan")
    logits = _predict(model, x, device, spec)
    labels = y.cpu()
    return accuracy(logits, labels), loss_on(loss_fn, logits, one_hot(labels, num_classes))


def _predict(model: nn.Module, x: Tensor | DatasetInputs, device, spec: ChainSpec) -> Tensor:
    return predict_logits(
        model, x, device=device, batch_size=spec.eval_batch_size, channels_last=spec.train.channels_last
    )


def train_round(
    model_factory: Callable[[], nn.Module],
    inputs: Tensor | DatasetInputs,
    targets: Tensor | TargetFn,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    train_spec: TrainSpec,
    *,
    seed: int,
    round_index: int,
    device: torch.device | str = "cpu",
    augment: Augment | None = None,
    on_step: Callable[[int, Tensor], None] | None = None,
    stop_condition: Callable[[TrainState], bool] | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
) -> tuple[nn.Module, TrainResult]:
    """Train the model of round ``round_index`` of chain seed ``seed``: a fresh model initialized from
    ``derive_seed(seed, round_index, "init")``, batches (and batch augmentation) from the ``"data"`` stream,
    the global torch RNG (dropout, Dataset transforms read in this process) from the ``"torch"`` stream,
    forked so the caller's random state is untouched. Every model a run trains goes through here: the rounds
    of a chain, a distillation student (round 1), the distillation CLI's teacher (round 0), and the
    early-stopped models of round 0's initialization (``stop_condition``, see
    :func:`selfdistill.nn.training.train`).

    Returns the trained model (eval mode) and the :class:`~selfdistill.nn.training.TrainResult`.
    """
    device = torch.device(device)
    model = fresh_model(model_factory, derive_seed(seed, round_index, "init"))
    generator = torch.Generator().manual_seed(derive_seed(seed, round_index, "data"))
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(derive_seed(seed, round_index, "torch"))
        fit = train(
            model,
            inputs,
            targets,
            loss_fn,
            train_spec,
            generator=generator,
            device=device,
            augment=augment,
            on_step=on_step,
            stop_condition=stop_condition,
            dist_ctx=dist_ctx,
        )
    return model, fit


def run_chain(
    data: Any,
    model_factory: Callable[[], nn.Module],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    spec: ChainSpec,
    *,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    hooks: ChainHooks | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
    settings: Mapping[str, Any] | None = None,
) -> NeuralChainResult:
    """Run (or resume) a self-distillation chain on ``data`` for every seed of ``spec``.

    ``data``: a :class:`~selfdistill.nn.DataSplits` (tensors) or a
    :class:`~selfdistill.nn.DatasetSplits` (Datasets read through DataLoaders); checked, with the
    model's output width, before any training. ``model_factory()`` builds a freshly initialized model (it
    is called under a seeded RNG). With ``out_dir`` every finished round is checkpointed and ``rounds.csv``
    rewritten (rank 0 only), and rounds already checkpointed there are loaded instead of trained, once
    verified (module docstring). ``settings``: what the results depend on besides (seed, round), stored as
    the checkpoints' fingerprint (the experiments layer passes the config minus the keys that do not change
    results); default: :func:`spec_settings`.
    """
    device = torch.device(device)
    hooks = hooks or ChainHooks()
    out = Path(out_dir) if out_dir is not None else None
    writes = out is not None and dist_ctx.is_main
    run = prepare_data(data)
    num_classes = run.num_classes
    check_model_output(model_factory, run, device)
    check_loss_fits(loss_fn, num_classes)
    labels_cpu = run.y_train
    onehot_train = one_hot(labels_cpu, num_classes)
    clean_labels = run.clean_y_train
    rows: list[dict[str, Any]] = []
    result = NeuralChainResult(rows=rows)
    settings = dict(settings) if settings is not None else spec_settings(spec)
    # tensors on a device stay there for training; targets follow the inputs
    target_device = run.train.device if isinstance(run.train, Tensor) else torch.device("cpu")

    for seed in spec.seeds:
        teacher: nn.Module | None = None
        teacher_sha256: str | None = None  # the weights of this round's teacher (None at round 0)
        # the finished student's eval-mode logits on the training examples ARE the next teacher's outputs
        # (same weights, same inputs, same code path): kept, so each round runs one pass over them, not two
        teacher_train_logits: Tensor | None = None
        for t in range(spec.rounds):
            init_seed = derive_seed(seed, t, "init")
            batch_seed = derive_seed(seed, t, "data")
            loaded = None
            if out is not None:
                path = checkpoint_path(out, seed, t)
                loaded = _load_round(
                    path, model_factory, settings, seed, t, init_seed, teacher_sha256, report=dist_ctx.is_main
                )
            if loaded is not None:
                student, row, teacher_sha256 = loaded
                student.to(device)
                rows.append(row)
                hooks.round_end(row, resumed=True)
                teacher = frozen_teacher(student)
                teacher_train_logits = None  # recomputed from the loaded weights when needed
                del student
                continue

            started = time.perf_counter()
            # targets of this round (y_0 at round 0; the frozen teacher's softmax, mixed with y_0, later)
            target_fn = None
            if teacher is None:
                train_targets = onehot_train
            else:
                if teacher_train_logits is None:
                    teacher_train_logits = _predict(teacher, run.train_eval, device, spec)
                teacher_probs = F.softmax(teacher_train_logits, dim=1)
                train_targets = mix_targets(teacher_probs, labels_cpu, num_classes, spec.xi)
                if run.augmented:
                    target_fn = _augmented_teacher_targets(teacher, labels_cpu.to(device), num_classes, spec)
            hooks.round_start(seed, t, spec.train.total_steps(run.num_train))
            student, fit = train_round(
                model_factory,
                run.train,
                target_fn if target_fn is not None else train_targets.to(target_device),
                loss_fn,
                spec.train,
                seed=seed,
                round_index=t,
                device=device,
                augment=run.augment,
                on_step=hooks.step,
                dist_ctx=dist_ctx,
            )
            train_logits = _predict(student, run.train_eval, device, spec)
            val_acc, val_loss = _split_metrics(
                student, run.val, run.y_val, num_classes, loss_fn, device, spec
            )
            test_acc, test_loss = _split_metrics(
                student, run.test, run.y_test, num_classes, loss_fn, device, spec
            )
            row = {
                "seed": int(seed),
                "round": t,
                "train_acc_original": accuracy(train_logits, labels_cpu),
                "train_loss_original": loss_on(loss_fn, train_logits, onehot_train),
                "target_loss": loss_on(loss_fn, train_logits, train_targets),
                "val_acc": val_acc,
                "test_acc": test_acc,
                "val_loss": val_loss,
                "test_loss": test_loss,
                "steps": fit.steps,
                "seconds": time.perf_counter() - started,
                "train_acc_clean": accuracy(train_logits, clean_labels),
                "student_seed": init_seed,
                "batch_seed": batch_seed,
            }
            rows.append(row)
            weights = {k: v.detach().cpu() for k, v in student.state_dict().items()}
            if writes:
                save_verified_checkpoint(
                    checkpoint_path(out, seed, t),
                    weights,
                    settings=settings,
                    seed=int(seed),
                    round=t,
                    init_seed=init_seed,
                    teacher_sha256=teacher_sha256,
                    row=row,
                )
                result.save_csv(out / "rounds.csv")
            teacher_sha256 = state_dict_sha256(weights)
            barrier(dist_ctx)
            hooks.round_end(row, resumed=False)
            teacher = frozen_teacher(student)
            teacher_train_logits = train_logits
            del student
    if writes:
        result.save_csv(out / "rounds.csv")
    return result


def _load_round(
    path: Path,
    model_factory: Callable[[], nn.Module],
    settings: Mapping[str, Any],
    seed: int,
    round_index: int,
    init_seed: int,
    teacher_sha256: str | None,
    *,
    report: bool,
) -> tuple[nn.Module, dict[str, Any], str] | None:
    """The verified round ``(student, row, weights sha256)`` of ``path``, or None (absent, or rejected:
    then one line on stderr says why and that the round is retrained)."""
    read = read_verified_checkpoint(path, settings=settings)
    if read.kind == "absent":
        return None
    problem = read.problem
    payload = read.payload or {}
    if problem is None and (payload.get("seed"), payload.get("round")) != (int(seed), round_index):
        problem = f"belongs to seed {payload.get('seed')} round {payload.get('round')}"
    elif problem is None and payload.get("init_seed") != init_seed:
        problem = "was initialized from another seed"
    elif problem is None and payload.get("teacher_sha256") != teacher_sha256:
        problem = "was trained from other teacher weights than this run's previous round"
    student = None
    if problem is None:
        student = fresh_model(model_factory, init_seed)
        try:
            student.load_state_dict(payload["state_dict"])
        except (RuntimeError, KeyError, TypeError) as err:
            problem = f"does not fit the model ({str(err).strip().splitlines()[0][:120]})"
    if problem is not None:
        if report:
            print(
                f"checkpoint {path}: {problem}; retraining seed {seed} round {round_index}", file=sys.stderr
            )
        return None
    row = dict(payload["row"])
    if "data_seed" in row and "batch_seed" not in row:  # a row saved before the column was renamed
        row["batch_seed"] = row.pop("data_seed")
    return student, row, read.weights_sha256


def _augmented_teacher_targets(
    teacher: nn.Module, labels: Tensor, num_classes: int, spec: ChainSpec
) -> Callable[[Tensor, Tensor], Tensor]:
    """Targets for an augmented batch: the frozen teacher evaluated on the SAME augmented inputs, mixed
    with the labels as in :func:`selfdistill.nn.losses.mix_targets` (inlined: no per-step validation)."""
    xi = float(spec.xi)

    @torch.no_grad()
    def targets(x_batch: Tensor, indices: Tensor) -> Tensor:
        probs = F.softmax(teacher(x_batch).float(), dim=1)
        if xi == 1.0:
            return probs
        onehot = F.one_hot(labels.to(indices.device)[indices].long(), num_classes).to(probs.dtype)
        return xi * probs + (1.0 - xi) * onehot

    return targets
