"""The plain baseline of a self-distillation chain: one model on the labels, early-stopped on validation.

Self-distillation's gain over round 0 may be no more than what stopping round 0 earlier gives. For each
(data seed, model seed) unit this trains round 0 again (same initialization, batch order and budget:
the same trajectory) and checks it every ``optimizer.eval_every`` steps and after the last step; it keeps
the check with the highest validation accuracy (ties: the earlier check) and reports its validation and
test accuracy and loss. With ``eval_every >= steps`` the only check is the end of training, so the model
IS round 0. Validation chooses the step, as it chooses the chain's round, so the comparison is fair; test
numbers are never used to choose.

Results are cached per unit in ``checkpoints/seed{S}/plain_early_stopping.json`` of the chain's folder,
with their sha256 and the fingerprint of the run's settings; a damaged or foreign file is recomputed, one
line on stderr says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PLAIN_COLUMNS = (
    "data_seed",
    "seed",
    "best_step",
    "checks",
    "val_acc",
    "test_acc",
    "val_loss",
    "test_loss",
    "final_val_acc",
    "final_test_acc",
)


def early_stop_on_validation(
    data: Any,
    model_factory: Callable[[], Any],
    loss_fn: Callable[[Any, Any], Any],
    spec: Any,
    seed: int,
    *,
    device: Any = "cpu",
    dist_ctx: Any = None,
) -> dict[str, Any]:
    """Round 0 of model seed ``seed`` (``spec``: a :class:`selfdistill.nn.chain.ChainSpec`), kept at its
    best validation check; returns the row (without ``data_seed``)."""
    import torch

    from selfdistill.nn.chain import train_round
    from selfdistill.nn.distributed import SINGLE_PROCESS
    from selfdistill.nn.training import accuracy, loss_on, one_hot, predict_logits

    dist_ctx = dist_ctx or SINGLE_PROCESS
    device = torch.device(device)
    num_classes = int(data.num_classes)
    best: dict[str, Any] = {}
    checks = [0]
    final: dict[str, float] = {}

    def split(model: Any, x: Any, y: Any) -> tuple[float, float]:
        logits = predict_logits(model, x, device=device, batch_size=spec.eval_batch_size)
        labels = y.cpu()
        return accuracy(logits, labels), loss_on(loss_fn, logits, one_hot(labels, num_classes))

    def check(state: Any) -> bool:
        checks[0] += 1
        val_acc, val_loss = split(state.model, data.x_val, data.y_val)
        test_acc, test_loss = split(state.model, data.x_test, data.y_test)
        final.update(val_acc=val_acc, test_acc=test_acc)
        if not best or val_acc > best["val_acc"]:
            best.update(best_step=state.step, val_acc=val_acc, test_acc=test_acc, val_loss=val_loss,
                        test_loss=test_loss)  # fmt: skip
        return False  # never stop: the whole budget, every check seen

    onehot = one_hot(data.y_train.cpu(), num_classes)
    train_round(  # round 0's initialization and batches, every validation check seen
        model_factory,
        data.x_train,
        onehot.to(data.x_train.device),
        loss_fn,
        spec.train,
        seed=seed,
        round_index=0,
        device=device,
        augment=getattr(data, "augment", None),
        stop_condition=check,
        dist_ctx=dist_ctx,
    )
    return {
        "seed": int(seed),
        **best,
        "checks": checks[0],
        "final_val_acc": final["val_acc"],
        "final_test_acc": final["test_acc"],
    }


def run_plain_early_stopping(
    data: Any,
    model_factory: Callable[[], Any],
    loss_fn: Callable[[Any, Any], Any],
    spec: Any,
    *,
    data_seed: int,
    out_dir: str | Path | None,
    settings: Mapping[str, Any],
    device: Any = "cpu",
    dist_ctx: Any = None,
) -> list[dict[str, Any]]:
    """:func:`early_stop_on_validation` for every model seed of ``spec``, cached per unit (module
    docstring); rows with ``data_seed`` (columns :data:`PLAIN_COLUMNS`)."""
    from selfdistill.io import atomic_write_verified_json, json_sha256, read_verified_json
    from selfdistill.nn.distributed import SINGLE_PROCESS

    dist_ctx = dist_ctx or SINGLE_PROCESS
    fingerprint = json_sha256(dict(settings))
    rows = []
    for seed in spec.seeds:
        name = "plain_early_stopping.json"
        cache = Path(out_dir) / "checkpoints" / f"seed{seed}" / name if out_dir is not None else None
        row = None
        if cache is not None and cache.is_file():
            saved, problem = read_verified_json(cache)
            if saved is not None and saved.get("fingerprint") != fingerprint:
                saved, problem = None, "was written by a run with different settings"
            if problem is not None and dist_ctx.is_main:
                print(f"plain early-stopping result {cache}: {problem}; recomputing it", file=sys.stderr)
            row = saved["row"] if saved is not None else None
        if row is None:
            row = {"data_seed": int(data_seed), **early_stop_on_validation(
                data, model_factory, loss_fn, spec, seed, device=device, dist_ctx=dist_ctx)}  # fmt: skip
            if cache is not None and dist_ctx.is_main:
                atomic_write_verified_json(cache, {"fingerprint": fingerprint, "row": row})
        rows.append({key: row[key] for key in PLAIN_COLUMNS})
    return rows
