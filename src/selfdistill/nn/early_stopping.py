"""Early stopping versus self-distillation at equal training loss (Mobahi et al. 2020, Figure 6).

For each chain seed and round t the chain recorded the training loss on the ORIGINAL labels at the end of
round t (``train_loss_original``) and its test accuracy. Here fresh models are trained on the labels with
the same seed scheme as round 0 (same initialization, same batch order) and stopped when their training
loss on the original labels FIRST drops to each recorded value; their test accuracy is then compared with
the self-distilled model's at equal training loss.

Because every one of those runs is the same deterministic round-0 trajectory stopped at a different
point, one run per seed serves all rounds: the training loss is evaluated every ``check_every`` steps
(``optimizer.eval_every``) and after the last step, and each target is marked reached at the first check
where ``loss <= target``. Later rounds have a HIGHER training loss on y_0 than round 0 ends with, so they
are reached early, which is the paper's point (self-distillation is not merely early stopping). A target
not reached within the step budget is reported with ``es_reached = False`` and the final model's numbers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from selfdistill.io import atomic_write_verified_json, json_sha256, read_verified_json
from selfdistill.nn.chain import ChainSpec, NeuralChainResult, spec_settings, train_round
from selfdistill.nn.checkpoint import atomic_write_csv
from selfdistill.nn.distributed import SINGLE_PROCESS, DistContext
from selfdistill.nn.training import TrainState, accuracy, loss_on, one_hot, predict_logits
from selfdistill.stats import PairedDifference, mean_std, paired_difference

ES_COLUMNS: tuple[str, ...] = (
    "seed",
    "round",
    "sd_train_loss",
    "sd_test_acc",
    "es_steps",
    "es_reached",
    "es_train_loss",
    "es_test_acc",
)


@dataclass
class EarlyStoppingResult:
    """Rows of ``early_stopping.csv``: one per (seed, round) of the chain."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def save_csv(self, path: str | Path) -> None:
        atomic_write_csv(path, self.rows, ES_COLUMNS)

    def per_round(self) -> list[dict[str, Any]]:
        table = []
        for t in sorted({int(r["round"]) for r in self.rows}):
            rows = [r for r in self.rows if int(r["round"]) == t]
            entry: dict[str, Any] = {
                "round": t,
                "num_seeds": len(rows),
                "reached": sum(bool(r["es_reached"]) for r in rows),
            }
            for name in ("sd_train_loss", "sd_test_acc", "es_steps", "es_train_loss", "es_test_acc"):
                entry[f"{name}_mean"], entry[f"{name}_std"] = mean_std([float(r[name]) for r in rows])
            diff = self.paired(t)
            entry.update(es_minus_sd_test_acc=diff.mean, es_minus_sd_ci_low=diff.ci_low,
                         es_minus_sd_ci_high=diff.ci_high)  # fmt: skip
            table.append(entry)
        return table

    def paired(self, round_index: int) -> PairedDifference:
        """Test accuracy of early stopping minus self-distillation at round ``round_index``'s training loss,
        paired over the same units (data seed, model seed), with its 95 % t interval."""
        rows = [r for r in self.rows if int(r["round"]) == round_index]
        return paired_difference(
            [float(r["es_test_acc"]) for r in rows],
            [float(r["sd_test_acc"]) for r in rows],
            names=("early stopping", "self-distillation"),
        )

    def table(self) -> str:
        header = (
            f"{'round':>5} {'train loss (y0)':>17} {'SD test acc':>17} {'ES test acc':>17} "
            f"{'ES steps':>10} {'reached':>8}   ES - SD test acc, points [95% CI]"
        )
        lines = [header, "-" * len(header)]
        for e in self.per_round():
            diff = self.paired(e["round"])
            lines.append(
                f"{e['round']:>5} {e['sd_train_loss_mean']:>17.4f} "
                f"{e['sd_test_acc_mean']:.4f} ± {e['sd_test_acc_std']:.4f} "
                f"{e['es_test_acc_mean']:.4f} ± {e['es_test_acc_std']:.4f} "
                f"{e['es_steps_mean']:>10.0f} {e['reached']:>5}/{e['num_seeds']}   "
                f"{diff.format(scale=100, digits=2)} (n={diff.n}, {diff.verdict()})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _targets_for_seed(chain: NeuralChainResult, seed: int) -> list[dict[str, Any]]:
    rows = sorted((r for r in chain.rows if int(r["seed"]) == seed), key=lambda r: int(r["round"]))
    return [
        {
            "round": int(r["round"]),
            "sd_train_loss": float(r["train_loss_original"]),
            "sd_test_acc": float(r["test_acc"]),
        }
        for r in rows
    ]


def early_stop_seed(
    data: Any,
    model_factory: Callable[[], nn.Module],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    spec: ChainSpec,
    seed: int,
    targets: list[dict[str, Any]],
    *,
    device: torch.device | str = "cpu",
    dist_ctx: DistContext = SINGLE_PROCESS,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> list[dict[str, Any]]:
    """One round-0 trajectory of ``seed`` stopped at the first check below each target training loss."""
    device = torch.device(device)
    num_classes = int(data.num_classes)
    labels = data.y_train.cpu()
    onehot = one_hot(labels, num_classes)
    pending = sorted(targets, key=lambda t: -t["sd_train_loss"])  # highest loss is reached first
    reached: list[dict[str, Any]] = []
    last: dict[str, float] = {}

    def measure(model: nn.Module) -> tuple[float, float]:
        logits = predict_logits(model, data.x_train, device=device, batch_size=spec.eval_batch_size)
        train_loss = loss_on(loss_fn, logits, onehot)
        test_logits = predict_logits(model, data.x_test, device=device, batch_size=spec.eval_batch_size)
        return train_loss, accuracy(test_logits, data.y_test.cpu())

    def stop(state: TrainState) -> bool:
        train_loss, test_acc = measure(state.model)
        last.update(steps=state.step, train_loss=train_loss, test_acc=test_acc)
        while pending and train_loss <= pending[0]["sd_train_loss"]:
            target = pending.pop(0)
            reached.append(
                {
                    **target,
                    "es_steps": state.step,
                    "es_reached": True,
                    "es_train_loss": train_loss,
                    "es_test_acc": test_acc,
                }
            )
        return not pending

    train_round(  # round 0's initialization and batches, stopped at each recorded loss
        model_factory,
        data.x_train,
        onehot.to(data.x_train.device),
        loss_fn,
        spec.train,
        seed=seed,
        round_index=0,
        device=device,
        augment=getattr(data, "augment", None),
        stop_condition=stop,
        on_step=on_step,
        dist_ctx=dist_ctx,
    )
    for target in pending:  # not reached within the budget
        reached.append(
            {
                **target,
                "es_steps": last.get("steps", 0),
                "es_reached": False,
                "es_train_loss": last.get("train_loss", math.nan),
                "es_test_acc": last.get("test_acc", math.nan),
            }
        )
    rows = [{"seed": int(seed), **r} for r in sorted(reached, key=lambda r: r["round"])]
    return [{key: row[key] for key in ES_COLUMNS} for row in rows]


def run_early_stopping_comparison(
    data: Any,
    model_factory: Callable[[], nn.Module],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    spec: ChainSpec,
    chain: NeuralChainResult,
    *,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
    on_step: Callable[[int, Tensor], None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> EarlyStoppingResult:
    """Figure 6 for every seed of ``chain``; with ``out_dir`` each seed's rows are saved (and reused on
    resume) in ``checkpoints/seed{S}/early_stopping.json`` and ``early_stopping.csv`` is written (rank 0).
    A saved file is reused only when its sha256 matches its content, it was written with the same
    ``settings`` (as in :func:`selfdistill.nn.chain.run_chain`) and for the same target losses."""
    result = EarlyStoppingResult()
    out = Path(out_dir) if out_dir is not None else None
    fingerprint = json_sha256(dict(settings) if settings is not None else spec_settings(spec))
    for seed in chain.seeds:
        targets = _targets_for_seed(chain, seed)
        cache = out / "checkpoints" / f"seed{seed}" / "early_stopping.json" if out is not None else None
        rows = None
        if cache is not None and cache.is_file():
            rows = _read_cache(cache, fingerprint, targets, report=dist_ctx.is_main)
        if rows is None:
            rows = early_stop_seed(
                data,
                model_factory,
                loss_fn,
                spec,
                seed,
                targets,
                device=device,
                dist_ctx=dist_ctx,
                on_step=on_step,
            )
            if cache is not None and dist_ctx.is_main:
                content = {"fingerprint": fingerprint, "targets": targets, "rows": rows}
                atomic_write_verified_json(cache, content)
        result.rows.extend(rows)
    if out is not None and dist_ctx.is_main:
        result.save_csv(out / "early_stopping.csv")
    return result


def _read_cache(
    path: Path, fingerprint: str, targets: list[dict[str, Any]], *, report: bool
) -> list[dict[str, Any]] | None:
    """The rows of a verified ``early_stopping.json`` made for ``targets``, or None (then recomputed; a
    damaged or foreign file is reported on stderr)."""
    saved, problem = read_verified_json(path)
    if saved is not None and saved.get("fingerprint") != fingerprint:
        saved, problem = None, "was written by a run with different settings"
    if problem is not None:
        if report:
            print(f"early-stopping results {path}: {problem}; recomputing them", file=sys.stderr)
        return None
    if saved is None or saved.get("targets") != targets:  # other targets: the chain grew
        return None
    return saved["rows"]
