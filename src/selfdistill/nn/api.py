"""Self-distillation and distillation on your own model and your own data, in a few lines.

:func:`~selfdistill.nn.self_distill` runs a multi-round self-distillation chain (Mobahi, Farajtabar,
Bartlett 2020, Section 5) and :func:`~selfdistill.nn.distill` distills a trained teacher into fresh
students with the methods of :mod:`selfdistill.nn.methods`, from

* any model factory: a function with no arguments returning a NEW ``nn.Module`` that maps a batch of inputs
  to logits ``(batch, num_classes)`` (torchvision: ``lambda: resnet18(num_classes=10)``; timm:
  ``lambda: timm.create_model("resnet18", num_classes=10)``; or your own class);
* your data as ``(x, y)`` tensor pairs or map-style ``torch.utils.data.Dataset`` objects of
  ``(input, label)`` items (train, validation, test; validation and test optional), or the
  :class:`~selfdistill.nn.DataSplits` of :func:`~selfdistill.nn.load_data`;
* a training budget and optimizer, :class:`~selfdistill.nn.training.TrainSpec` (with the speed switches
  ``bf16``, ``channels_last`` and ``compile``).

Datasets are read through DataLoaders (``num_workers``, ``pin_memory``) with seeded batch order, and give
the same numbers as tensors holding the same examples (:mod:`selfdistill.nn.inputs`). Bad data and a model
whose output width is not ``num_classes`` are refused with a one-line error before any training.
``selfdistill train`` runs :func:`~selfdistill.nn.self_distill` too; ``selfdistill distill`` trains its
teacher and every student with :func:`~selfdistill.nn.chain.train_round`, the function
:func:`~selfdistill.nn.distill` uses.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from selfdistill.nn import TrainSpec, self_distill
>>> _ = torch.manual_seed(0)
>>> x, y = torch.randn(96, 5), torch.randint(0, 3, (96,))
>>> def model():
...     return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
>>> result = self_distill(model, (x[:64], y[:64]), (x[64:], y[64:]), num_classes=3, rounds=2,
...                       training=TrainSpec(steps=20, batch_size=16), device="cpu")
>>> result.rounds
[0, 1]
>>> result.best_round in (0, 1)
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfdistill.nn.chain import (
    ChainHooks,
    ChainSpec,
    NeuralChainResult,
    frozen_teacher,
    run_chain,
    train_round,
)
from selfdistill.nn.distributed import SINGLE_PROCESS, DistContext, resolve_device
from selfdistill.nn.inputs import as_splits, check_model_output, num_examples, prepare_data
from selfdistill.nn.losses import PROBABILITY_TARGET_LOSSES, build_loss, check_loss_fits
from selfdistill.nn.methods import DistillationMethod, build_method
from selfdistill.nn.training import TrainSpec, accuracy, predict_logits
from selfdistill.stats import mean_std

__all__ = ["DISTILL_COLUMNS", "DistillationResult", "distill", "self_distill"]

DISTILL_COLUMNS = ("method", "seed", "val_acc", "test_acc", "train_loss", "steps", "seconds")


def _device(device: torch.device | str) -> torch.device:
    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        return resolve_device(device)
    return torch.device(device)


def _seed_tuple(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of seeds; got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count (0 .. n-1) or a list of seeds; got {seeds}")
        return tuple(range(seeds))
    return tuple(int(s) for s in seeds)


def _check_training(training: Any) -> TrainSpec:
    if not isinstance(training, TrainSpec):
        raise ValueError(
            "training must be a TrainSpec giving the budget, e.g. TrainSpec(steps=500) or "
            f"TrainSpec(epochs=10, lr=1e-3); got {type(training).__name__}"
        )
    return training


def self_distill(
    model_factory: Callable[[], nn.Module],
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    training: TrainSpec,
    num_classes: int | None = None,
    rounds: int = 3,
    seeds: int | Sequence[int] = 1,
    loss: str | nn.Module = "l2",
    xi: float = 1.0,
    device: torch.device | str = "auto",
    out_dir: str | Path | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    train_eval: Any = None,
    clean_train_labels: Tensor | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    eval_batch_size: int = 1024,
    hooks: ChainHooks | None = None,
    settings: Mapping[str, Any] | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
) -> NeuralChainResult:
    """Run (or resume) a self-distillation chain on your model and data.

    Round 0 trains a fresh model from ``model_factory`` on the labels; round ``t`` trains another fresh
    model on ``xi * softmax(f_{t-1}(x)) + (1 - xi) * onehot(y)``, where ``f_{t-1}`` is round ``t-1``'s model,
    frozen (:mod:`selfdistill.nn.chain`). Every seed runs its own chain.

    Parameters
    ----------
    model_factory : callable
        ``model_factory()`` returns a NEW ``nn.Module`` mapping a batch of inputs to logits
        ``(batch, num_classes)``; it is called under a seeded RNG once per round and seed.
    train, val, test : (x, y) pair, Dataset, or ``train`` a DataSplits/DatasetSplits
        See :func:`~selfdistill.nn.as_splits`. ``val`` chooses the best round; ``test`` is reported,
        never used to choose. Both are optional.
    training : TrainSpec
        Optimizer, budget per round (``steps`` or ``epochs``) and speed switches.
    num_classes : int
        Number of classes (not needed with a DataSplits or DatasetSplits).
    rounds : int
        Rounds per seed (0 .. rounds-1).
    seeds : int or sequence of int
        A count ``n`` (seeds 0 .. n-1) or the seeds themselves.
    loss : str or nn.Module
        A name of :func:`~selfdistill.nn.build_loss` (``"l2"``, ``"soft_ce"``, ``"kl"``,
        ``"hard_ce"``, ``"ptloss"``) or a module ``loss(student_logits, target_probs) -> scalar``.
    xi : float
        Weight of the teacher in the targets from round 1 on (1: pure self-distillation).
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    out_dir : path, optional
        Checkpoint every finished round there and write ``rounds.csv``; calling again with the same
        arguments resumes after the last finished round (identical results).
    augment, train_eval, clean_train_labels, num_workers, pin_memory
        Data options (:func:`~selfdistill.nn.as_splits`).
    eval_batch_size : int
        Batch size of the evaluation passes.
    hooks, settings, dist_ctx
        For the experiments layer: progress callbacks (:class:`~selfdistill.nn.chain.ChainHooks`), the
        checkpoint fingerprint, the torchrun context.

    Returns
    -------
    NeuralChainResult
        Prints its table, plots its curves (``result.plot()``), names ``result.best_round``.
    """
    data = as_splits(
        train,
        val,
        test,
        num_classes=num_classes,
        augment=augment,
        train_eval=train_eval,
        clean_train_labels=clean_train_labels,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    if isinstance(loss, str):
        if loss in PROBABILITY_TARGET_LOSSES and not 0.0 <= xi <= 1.0:
            raise ValueError(
                f"xi={xi:g} cannot be used with loss {loss!r}: for xi outside [0, 1] the targets have "
                f"negative entries and {loss} takes their logarithm; use loss 'l2' or 'soft_ce', or xi in "
                "[0, 1]"
            )
        loss_fn = build_loss(loss)
    else:
        loss_fn = loss
    spec = ChainSpec(
        rounds=rounds,
        seeds=_seed_tuple(seeds),
        train=_check_training(training),
        xi=float(xi),
        eval_batch_size=eval_batch_size,
    )
    return run_chain(
        data,
        model_factory,
        loss_fn,
        spec,
        device=_device(device),
        out_dir=out_dir,
        hooks=hooks,
        dist_ctx=dist_ctx,
        settings=settings,
    )


# ------------------------------------------------------------------------------------------ distillation


@dataclass
class DistillationResult:
    """Students distilled from one teacher, with their table, plot and best method.

    ``rows``: one dict per method and seed (columns ``DISTILL_COLUMNS``); ``teacher``: the teacher's
    accuracies; ``descriptions``: what each method computes. Prints as a table (mean ± std over seeds),
    plots (:meth:`plot`), names the best method on validation data (:attr:`best_method`), saves as CSV."""

    rows: list[dict[str, Any]]
    teacher: dict[str, float]
    descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Method names, in the order they ran."""
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def per_method(self) -> list[dict[str, Any]]:
        """Mean and sample standard deviation over seeds of the validation and test accuracy, per method."""
        table = []
        for name in self.methods:
            rows = [r for r in self.rows if r["method"] == name]
            entry: dict[str, Any] = {
                "method": name,
                "description": self.descriptions.get(name, ""),
                "num_seeds": len(rows),
            }
            for column in ("val_acc", "test_acc"):
                entry[f"{column}_mean"], entry[f"{column}_std"] = mean_std([float(r[column]) for r in rows])
            table.append(entry)
        return table

    @property
    def best_method(self) -> str | None:
        """The method with the highest mean validation accuracy (ties: the earlier one); None without a
        validation split. Test accuracy is reported, never used to choose."""
        candidates = [e for e in self.per_method() if math.isfinite(e["val_acc_mean"])]
        if not candidates:
            return None
        return max(candidates, key=lambda e: e["val_acc_mean"])["method"]

    def table(self) -> str:
        lines = [
            f"teacher: val acc {self.teacher['val_acc']:.4f}, test acc {self.teacher['test_acc']:.4f}",
            f"{'method':>16} {'seeds':>5} {'val acc':>17} {'test acc':>17}  description",
        ]
        for e in self.per_method():
            lines.append(
                f"{e['method']:>16} {e['num_seeds']:>5} {e['val_acc_mean']:.4f} ± {e['val_acc_std']:.4f} "
                f"{e['test_acc_mean']:.4f} ± {e['test_acc_std']:.4f}  {e['description']}"
            )
        if self.best_method is not None:
            lines.append(f"best method by validation accuracy: {self.best_method}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax: Any = None) -> Any:
        """Validation and test accuracy per method (mean ± std over seeds), the teacher's test accuracy as a
        line; returns the matplotlib Figure."""
        import numpy as np

        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(self.methods) + 2), 4), layout="constrained")
        table = self.per_method()
        positions = np.arange(len(table))
        for offset, column, label in ((-0.2, "val_acc", "validation"), (0.2, "test_acc", "test")):
            means = [e[f"{column}_mean"] for e in table]
            stds = [e[f"{column}_std"] for e in table]
            ax.bar(positions + offset, means, width=0.4, yerr=stds, capsize=3, label=label)
        ax.axhline(self.teacher["test_acc"], color="k", linestyle=":", label="teacher, test")
        ax.set_xticks(positions, [e["method"] for e in table], rotation=30, ha="right")
        ax.set_ylabel("student accuracy")
        finite = [v for e in table for v in (e["val_acc_mean"], e["test_acc_mean"]) if math.isfinite(v)]
        if finite:
            ax.set_ylim(max(0.0, min(finite + [self.teacher["test_acc"]]) - 0.1), 1.0)
        ax.legend(fontsize="small")
        ax.set_title("distilled students, mean ± std over seeds")
        return ax.figure

    def save_csv(self, path: str | Path) -> None:
        from selfdistill.io import atomic_write_csv

        atomic_write_csv(path, self.rows, DISTILL_COLUMNS)


def _as_method(method: Any) -> DistillationMethod:
    if isinstance(method, DistillationMethod):
        return method
    if isinstance(method, str):
        return build_method(method)
    raise ValueError(
        f"methods: expected DistillationMethod objects (selfdistill.nn.methods.build_method) or kind names; "
        f"got {type(method).__name__}"
    )


def distill(
    teacher: nn.Module,
    student_factory: Callable[[], nn.Module],
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    training: TrainSpec,
    num_classes: int | None = None,
    methods: Any = "kl",
    seeds: int | Sequence[int] = 1,
    device: torch.device | str = "auto",
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    train_eval: Any = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    eval_batch_size: int = 1024,
) -> DistillationResult:
    """Distill a trained ``teacher`` into fresh students, one per method and seed.

    Each student minimizes ``method.loss(student_logits, method.targets(teacher_probs))`` on the training
    inputs (their labels are not used), where ``teacher_probs`` is the frozen teacher's softmax, computed
    once and looked up by example index (without augmentation) or on every augmented batch. Students are
    round 1 of their seed (:func:`~selfdistill.nn.chain.train_round`), so a student's initialization and
    batches depend only on its seed, not on the method.

    Parameters
    ----------
    teacher : nn.Module
        The trained teacher (a frozen copy is used; yours is left as it is).
    student_factory : callable
        ``student_factory()`` returns a NEW student ``nn.Module`` (logits ``(batch, num_classes)``).
    train, val, test, num_classes, augment, train_eval, num_workers, pin_memory
        Your data, as in :func:`~selfdistill.nn.self_distill`.
    training : TrainSpec
        Optimizer and budget of every student.
    methods : str, DistillationMethod or a sequence of them
        :func:`~selfdistill.nn.methods.build_method` objects (e.g. ``build_method("kd", temperature=4)``) or
        names of kinds without parameters (``"kl"``).
    seeds : int or sequence of int
        Student seeds (a count n: 0 .. n-1).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    eval_batch_size : int
        Batch size of the evaluation passes.

    Returns
    -------
    DistillationResult
        Prints its table (mean ± std over seeds per method), plots it, names ``best_method`` by validation
        accuracy.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from selfdistill.nn import TrainSpec, build_method, distill
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(96, 5), torch.randint(0, 3, (96,))
    >>> teacher = nn.Linear(5, 3)             # your trained teacher (untrained here, to keep it short)
    >>> students = distill(teacher, lambda: nn.Linear(5, 3), (x[:64], y[:64]), (x[64:], y[64:]),
    ...                    num_classes=3, methods=["kl", build_method("kd", temperature=4.0)], seeds=2,
    ...                    training=TrainSpec(steps=20, batch_size=16), device="cpu")
    >>> students.methods
    ['kl', 'kd_T4']
    >>> len(students.rows)                    # one row per method and seed
    4
    """
    device = _device(device)
    training = _check_training(training)
    data = as_splits(
        train,
        val,
        test,
        num_classes=num_classes,
        augment=augment,
        train_eval=train_eval,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    run = prepare_data(data)
    method_list = [_as_method(m) for m in (methods if isinstance(methods, list | tuple) else [methods])]
    names = [m.name for m in method_list]
    if not method_list or len(set(names)) != len(names):
        raise ValueError(f"methods must be at least one, with distinct names; got {names}")
    frozen = frozen_teacher(teacher).to(device)
    check_model_output(lambda: frozen, run, device, role="teacher")
    check_model_output(student_factory, run, device, role="student")
    for method in method_list:
        try:
            check_loss_fits(method.loss, run.num_classes)
        except ValueError as err:
            raise ValueError(f"method {method.name!r}: {err}") from None

    def predict(model: nn.Module, inputs: Any) -> Tensor:
        return predict_logits(
            model, inputs, device=device, batch_size=eval_batch_size, channels_last=training.channels_last
        )

    def split_accuracy(model: nn.Module, inputs: Any, labels: Tensor) -> float:
        return accuracy(predict(model, inputs), labels) if num_examples(inputs) else float("nan")

    teacher_probs = F.softmax(predict(frozen, run.train_eval), dim=1)
    teacher_metrics = {
        "train_acc": accuracy(teacher_probs, run.y_train),
        "val_acc": split_accuracy(frozen, run.val, run.y_val),
        "test_acc": split_accuracy(frozen, run.test, run.y_test),
    }
    target_device = run.train.device if isinstance(run.train, Tensor) else torch.device("cpu")
    rows: list[dict[str, Any]] = []
    for method in method_list:
        if run.augmented:
            targets: Any = _per_batch_targets(frozen, method)
        else:
            targets = method.targets(teacher_probs).to(target_device)
        for seed in _seed_tuple(seeds):
            started = time.perf_counter()
            student, fit = train_round(
                student_factory,
                run.train,
                targets,
                method.loss,
                training,
                seed=seed,
                round_index=1,
                device=device,
                augment=run.augment,
            )
            rows.append(
                {
                    "method": method.name,
                    "seed": seed,
                    "val_acc": split_accuracy(student, run.val, run.y_val),
                    "test_acc": split_accuracy(student, run.test, run.y_test),
                    "train_loss": fit.last_batch_loss,
                    "steps": fit.steps,
                    "seconds": time.perf_counter() - started,
                }
            )
    return DistillationResult(rows, teacher_metrics, {m.name: m.description for m in method_list})


def _per_batch_targets(teacher: nn.Module, method: DistillationMethod) -> Callable[[Tensor, Tensor], Tensor]:
    """Targets of an augmented batch: the method's transform of the teacher's softmax on that batch."""

    @torch.no_grad()
    def targets(x_batch: Tensor, indices: Tensor) -> Tensor:
        return method.targets(F.softmax(teacher(x_batch).float(), dim=1))

    return targets

