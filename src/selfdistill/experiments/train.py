"""Run a multi-round neural self-distillation experiment from a YAML config.

  selfdistill train digits_mlp_l2 --out results/digits          (a shipped config, by name)
  selfdistill train my.yaml --out runs/a --set optimizer.steps=500 --set chain.rounds=4
  selfdistill train cifar10_resnet50_l2 --data-root ~/data --out runs/c10
  torchrun --nproc_per_node 4 -m selfdistill train cifar10_resnet50_l2 --data-root ~/data --out runs/c10

The folder --out receives config.yaml (the validated config), rounds.csv (per seed and round: train
accuracy/loss on the original labels, loss against the round's targets, val/test accuracy and loss, steps,
seconds), checkpoints/seed{S}/round{T}.pt, early_stopping.csv (when early_stopping_comparison is true),
summary.json (per-round mean/std, best round chosen by VALIDATION accuracy) and plots. Every finished round
is checkpointed (with the sha256 of its weights and the fingerprint of the config): run the same command
again after an interruption and the chain resumes after the last finished round, with results identical to
an uninterrupted run; a damaged or foreign checkpoint is retrained, with a line on stderr saying so.
The run owns --out while it runs: a second run into it is refused, with or without --overwrite. A folder
holding a run with a different config is refused (use another --out, or --overwrite to empty it first);
see selfdistill.experiments.runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from selfdistill.experiments.config import (
    ExperimentConfig,
    add_run_arguments,
    load_config,
    result_settings,
)
from selfdistill.experiments.runs import check_resumable, claim_run_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, example="digits_mlp_l2", set_example="optimizer.steps=50")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.data_root is not None:
        config.data.root = str(args.data_root)
    if args.no_progress:
        config.logging.progress = False
    out = args.out if args.out is not None else Path("results") / config.name
    run_experiment(config, out, overwrite=args.overwrite, plots=not args.no_plots)
    return 0


class _ProgressHooks:
    """tqdm bars (rounds over all seeds; steps of the current round) + optional TensorBoard scalars."""

    def __init__(self, total_rounds: int, show: bool, writer: Any = None):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.show = show
        self.writer = writer
        self.outer = tqdm(total=total_rounds, desc="rounds", unit="round", disable=not show, position=0)
        self.inner = None
        self.every = 1

    def round_start(self, seed: int, round_index: int, total_steps: int) -> None:
        self.seed, self.round = seed, round_index
        self.every = max(1, total_steps // 100)
        if self.show:
            self.inner = self._tqdm(
                total=total_steps,
                desc=f"seed {seed} round {round_index}",
                unit="step",
                leave=False,
                position=1,
            )

    def step(self, step: int, loss: Any) -> None:
        if step % self.every:
            return
        if self.inner is not None:
            self.inner.update(self.every)
            self.inner.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
        if self.writer is not None:  # the batch loss about 100 times a round
            self.writer.add_scalar(f"seed{self.seed}/round{self.round}/batch_loss", float(loss), step)

    def round_end(self, row: dict[str, Any], resumed: bool) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        self.outer.update(1)
        self.outer.set_postfix(
            seed=row["seed"], round=row["round"], test_acc=f"{row['test_acc']:.3f}", resumed=resumed
        )
        if self.writer is not None and not resumed:  # a resumed round was logged by the run that trained it
            for key in ("train_acc_original", "train_loss_original", "target_loss", "val_acc", "test_acc"):
                self.writer.add_scalar(f"seed{row['seed']}/{key}", row[key], row["round"])

    def close(self) -> None:
        self.outer.close()  # the writer stays open: run_experiment adds the per-round means, then closes it


def _tensorboard_writer(config: ExperimentConfig, out: Path, is_main: bool) -> Any:
    if not (config.logging.tensorboard and is_main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "logging.tensorboard is true but the tensorboard package is not installed "
            "(pip install tensorboard); continuing with CSV logging only",
            file=sys.stderr,
        )
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def build_components(config: ExperimentConfig) -> dict[str, Any]:
    """Data, model factory, loss and chain spec of ``config`` (validates model and loss arguments)."""
    from selfdistill.nn.chain import ChainSpec
    from selfdistill.nn.losses import build_loss, check_loss_fits

    data = config.data.load()
    model_factory = config.model.factory(data)
    try:
        model_factory()
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"model: {config.model.name!r} rejected its arguments {config.model.kwargs}: {err}"
        ) from None
    try:
        loss_fn = build_loss(config.loss.name, **config.loss.kwargs)
        check_loss_fits(loss_fn, data.num_classes)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"loss: {config.loss.name!r} rejected its arguments {config.loss.kwargs}: {err}"
        ) from None
    train_spec = config.train_spec()
    spec = ChainSpec(
        rounds=config.chain.rounds, seeds=tuple(config.chain.seed_list), train=train_spec, xi=config.loss.xi
    )
    return {"data": data, "model_factory": model_factory, "loss_fn": loss_fn, "spec": spec}


def _on_main(action: Any, ctx: Any, *, share: bool = True) -> Any:
    """``action()`` on rank 0 only; every rank gets its result (``share``; else rank 0 keeps it and the
    others get None), or raises its error: the other ranks wait for rank 0 instead of racing it, and a
    refused run stops on every rank rather than hanging."""
    from selfdistill.nn.distributed import share_from_main

    result, outcome, error = None, None, None
    if ctx.is_main:
        try:
            result = action()
            outcome = ("ok", result if share else None)
        except ValueError as err:
            error, outcome = err, ("error", str(err))
    outcome = share_from_main(outcome, ctx)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise ValueError(outcome[1])
    return result if ctx.is_main else outcome[1]


def run_experiment(
    config: ExperimentConfig, out: Path, *, overwrite: bool = False, plots: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment of ``config`` into ``out``; returns the summary (also summary.json)."""
    from selfdistill.nn.api import self_distill
    from selfdistill.nn.chain import count_checkpoints
    from selfdistill.nn.checkpoint import atomic_write_json
    from selfdistill.nn.distributed import init_distributed, shutdown_distributed
    from selfdistill.nn.early_stopping import run_early_stopping_comparison

    out = Path(out)
    ctx = init_distributed(config.device)
    folder = None
    try:
        # read-only check of --out (rank 0): fail before loading the data
        _on_main(lambda: check_resumable(out, config, overwrite=overwrite), ctx)
        parts = build_components(config)  # data, model, loss checked before --out is touched
        spec = parts["spec"]
        # rank 0 takes --out (lock, overwrite/resume policy, config.yaml) before any rank writes
        folder = _on_main(lambda: claim_run_folder(out, config, overwrite=overwrite), ctx, share=False)
        found = _on_main(lambda: count_checkpoints(out, spec), ctx)
        data = parts["data"]
        if ctx.device.type == "cuda":
            data = data.to(ctx.device)
        settings = result_settings(config)
        show = config.logging.progress and ctx.is_main and verbose
        if verbose and ctx.is_main:
            total = spec.rounds * len(spec.seeds)
            state = (
                f"resuming from {found} of {total} round checkpoints (each verified before use)"
                if found
                else "starting"
            )
            print(
                f"{config.name}: {data!r}\n{state} in {out} on {ctx.device}"
                f"{f' x {ctx.world_size} processes' if ctx.is_distributed else ''}",
                file=sys.stderr,
            )
        writer = _tensorboard_writer(config, out, ctx.is_main)
        hooks = _ProgressHooks(spec.rounds * len(spec.seeds), show, writer)
        try:
            chain = self_distill(  # the Python API, with the config's DataSplits as its data
                parts["model_factory"],
                data,
                training=spec.train,
                rounds=spec.rounds,
                seeds=spec.seeds,
                loss=parts["loss_fn"],
                xi=spec.xi,
                device=ctx.device,
                out_dir=out,
                hooks=hooks,
                dist_ctx=ctx,
                settings=settings,
            )
        finally:
            hooks.close()
        chain.meta.update(
            {
                "name": config.name,
                "data": config.data.name,
                "model": config.model.name,
                "loss": config.loss.name,
                "xi": config.loss.xi,
                "device": str(ctx.device),
                "world_size": ctx.world_size,
            }
        )
        summary = chain.summary()
        es = None
        if config.early_stopping_comparison:
            es = run_early_stopping_comparison(
                data,
                parts["model_factory"],
                parts["loss_fn"],
                spec,
                chain,
                device=ctx.device,
                out_dir=out,
                dist_ctx=ctx,
                settings=settings,
            )
            summary["early_stopping"] = es.per_round()
        if ctx.is_main:
            atomic_write_json(out / "summary.json", summary)
            if writer is not None:
                for entry in summary["per_round"]:
                    for key in ("train_acc_original", "test_acc", "val_acc", "train_loss_original"):
                        writer.add_scalar(f"mean/{key}", entry[f"{key}_mean"], entry["round"])
                writer.close()
            if plots:
                summary["plots"] = [str(p) for p in _make_plots(out, config.name, es is not None)]
                atomic_write_json(out / "summary.json", summary)
            if verbose:
                print(f"\n{config.name}: per round, mean ± std over {len(chain.seeds)} seed(s)")
                print(chain.table())
                if es is not None:
                    print("\nearly stopping at equal training loss (Figure 6)")
                    print(es.table())
                print(f"results in {out}")
        return summary
    finally:
        if folder is not None:
            folder.release()
        shutdown_distributed(ctx)


def _make_plots(out: Path, title: str, early_stopping: bool) -> list[Path]:
    try:
        from selfdistill.nn.plots import plot_early_stopping, plot_rounds
    except ImportError as err:
        print(f"plots skipped: {err}", file=sys.stderr)
        return []
    paths = list(plot_rounds(out / "rounds.csv", out, title=title) or [])
    if early_stopping:
        result = plot_early_stopping(out / "early_stopping.csv", out, title=title)
        if isinstance(result, list | tuple):
            paths.extend(result)
        elif result is not None:
            paths.append(result)
    return paths


def _standalone(argv: list[str] | None = None) -> int:
    """``python -m selfdistill.experiments.train ...``: the same command without the other sub-commands."""
    parser = argparse.ArgumentParser(
        prog="selfdistill train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"selfdistill train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
