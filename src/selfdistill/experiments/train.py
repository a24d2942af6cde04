"""Run a multi-round neural self-distillation experiment from a YAML config.

  selfdistill train digits_mlp_l2 --out results/digits          (a shipped config, by name)
  selfdistill train my.yaml --out runs/a --set optimizer.steps=500 --set chain.rounds=4
  selfdistill train cifar10_resnet50_l2 --data-root ~/data --out runs/c10
  torchrun --nproc_per_node 4 -m selfdistill train cifar10_resnet50_l2 --data-root ~/data --out runs/c10

Every config key (type, default, meaning): `selfdistill config train`.

Seeds: ``data.seeds`` (splits and label-noise draw) and ``chain.seeds`` (initialization and batch order)
are two axes; the run trains a chain for every (data seed, model seed) unit, and every comparison is
paired over units (selfdistill.experiments.chain_summary): each round against round 0, the round chosen per
unit on validation against round 0 and the last round, and with plain_early_stopping: true a plain model
early-stopped on validation against them, as mean differences with 95 % intervals.

The folder --out receives config.yaml (the validated config), rounds.csv (per data seed, model seed and
round: train accuracy/loss on the labels trained on (noisy ones under label noise) and on the clean labels,
loss against the round's targets, val/test accuracy and loss (clean labels), steps, seconds), paired.csv
(the comparisons), early_stopping.csv / plain_early_stopping.csv (when switched on), summary.json
(per-round statistics, chosen rounds, comparisons, which seed axes were varied, the wall time) and plots
(rounds_*.png with 95 % intervals of the mean, paired.png). data_seed{D}/ holds the chains of one data
seed: checkpoints/seed{S}/round{T}.pt and its own rounds.csv. Every finished round is checkpointed (with
the sha256 of its weights and the fingerprint of the config and data seed): run the same command again
after an interruption and the chains resume after the last finished round, with results identical to an
uninterrupted run; a damaged or foreign checkpoint is retrained, with a line on stderr saying so.
The run owns --out while it runs: a second run into it is refused, with or without --overwrite. A folder
holding a run with a different config is refused (use another --out, or --overwrite to empty it first);
see selfdistill.experiments.runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from selfdistill.experiments.chain_summary import PAIRED_COLUMNS
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
    """tqdm bars (rounds over all seeds; steps of the current round) + optional TensorBoard scalars (tags
    start with ``prefix``, ``data{D}/`` when the run has several data seeds)."""

    def __init__(self, total_rounds: int, show: bool, writer: Any = None):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.prefix = ""
        self.on_round: Any = None  # called with every finished (or loaded) round's row
        self.data_seed = 0
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
                desc=f"{self.prefix.replace('/', ' ')}seed {seed} round {round_index}",
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
            tag = f"{self.prefix}seed{self.seed}/round{self.round}/batch_loss"
            self.writer.add_scalar(tag, float(loss), step)

    def round_end(self, row: dict[str, Any], resumed: bool) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        self.outer.update(1)
        self.outer.set_postfix(
            seed=row["seed"], round=row["round"], test_acc=f"{row['test_acc']:.3f}", resumed=resumed
        )
        if self.on_round is not None:
            self.on_round(row)
        if self.writer is not None and not resumed:  # a resumed round was logged by the run that trained it
            for key in ("train_acc_original", "train_loss_original", "target_loss", "val_acc", "test_acc"):
                self.writer.add_scalar(f"{self.prefix}seed{row['seed']}/{key}", row[key], row["round"])

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


def build_components(config: ExperimentConfig, data_seed: int | None = None) -> dict[str, Any]:
    """Data (of ``data_seed``, default the first), model factory, loss and chain spec of ``config``
    (validates model and loss arguments)."""
    from selfdistill.nn.chain import ChainSpec
    from selfdistill.nn.losses import build_loss, check_loss_fits

    data = config.data.load(data_seed)
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


def chain_folder(out: Path, data_seed: int) -> Path:
    """The folder of the chains of one data seed: its own ``checkpoints/seed{S}/round{T}.pt`` and
    ``rounds.csv`` (the run's ``rounds.csv`` merges every data seed's)."""
    return Path(out) / f"data_seed{int(data_seed)}"


def _old_layout_note(out: Path) -> str | None:
    """A line about checkpoints written before data seeds had folders of their own (not used)."""
    if (Path(out) / "checkpoints").is_dir() and any((Path(out) / "checkpoints").glob("seed*/round*.pt")):
        return (
            f"{out / 'checkpoints'} holds round checkpoints of the layout before data seeds "
            "(one data seed, checkpoints/seed*/): they are not used; the rounds are trained into "
            "data_seed<D>/checkpoints/ (delete the old folder when done)"
        )
    return None


def run_experiment(
    config: ExperimentConfig, out: Path, *, overwrite: bool = False, plots: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment of ``config`` into ``out``: every (data seed, model seed) unit's chain,
    the comparisons switched on, the paired summary; returns the summary (also summary.json)."""
    from selfdistill.experiments.chain_summary import axes_line, format_chain, summarize_chain
    from selfdistill.experiments.plain_early_stopping import PLAIN_COLUMNS, run_plain_early_stopping
    from selfdistill.nn.api import self_distill
    from selfdistill.nn.chain import EXTRA_COLUMNS, ROUND_COLUMNS, count_checkpoints
    from selfdistill.nn.checkpoint import atomic_write_csv, atomic_write_json
    from selfdistill.nn.distributed import init_distributed, shutdown_distributed
    from selfdistill.nn.early_stopping import ES_COLUMNS, EarlyStoppingResult, run_early_stopping_comparison

    started = time.perf_counter()
    out = Path(out)
    ctx = init_distributed(config.device)
    folder = None
    data_seeds = config.data.seed_list
    try:
        # read-only check of --out (rank 0): fail before loading the data
        _on_main(lambda: check_resumable(out, config, overwrite=overwrite), ctx)
        parts = build_components(config, data_seeds[0])  # data, model, loss checked before --out is touched
        spec = parts["spec"]
        # rank 0 takes --out (lock, overwrite/resume policy, config.yaml) before any rank writes
        folder = _on_main(lambda: claim_run_folder(out, config, overwrite=overwrite), ctx, share=False)
        found = _on_main(lambda: sum(count_checkpoints(chain_folder(out, d), spec) for d in data_seeds), ctx)
        show = config.logging.progress and ctx.is_main and verbose
        total = spec.rounds * len(spec.seeds) * len(data_seeds)
        if verbose and ctx.is_main:
            state = (
                f"resuming from {found} of {total} round checkpoints (each verified before use)"
                if found
                else "starting"
            )
            print(
                f"{config.name}: {parts['data']!r}\n{axes_line(data_seeds, spec.seeds)}\n{state} in {out} on "
                f"{ctx.device}{f' x {ctx.world_size} processes' if ctx.is_distributed else ''}",
                file=sys.stderr,
            )
            note = _old_layout_note(out)
            if note:
                print(note, file=sys.stderr)
        writer = _tensorboard_writer(config, out, ctx.is_main)
        hooks = _ProgressHooks(total, show, writer)
        rows: list[dict[str, Any]] = []
        es_rows: list[dict[str, Any]] = []
        plain_rows: list[dict[str, Any]] = []
        round_columns = ("data_seed",) + ROUND_COLUMNS + EXTRA_COLUMNS
        finished: list[dict[str, Any]] = []  # rounds.csv holds every finished round, also after a kill

        def keep(row: dict[str, Any]) -> None:
            finished.append({"data_seed": int(hooks.data_seed), **row})
            if ctx.is_main:
                atomic_write_csv(out / "rounds.csv", finished, round_columns)

        hooks.on_round = keep
        try:
            for data_seed in data_seeds:
                if data_seed != data_seeds[0]:
                    parts = build_components(config, data_seed)
                data = parts["data"].to(ctx.device) if ctx.device.type == "cuda" else parts["data"]
                sub = chain_folder(out, data_seed)
                # a chain's checkpoints carry its data seed: one of another data seed is never taken for it
                settings = {**result_settings(config), "data_seed": int(data_seed)}
                hooks.prefix = f"data{data_seed}/" if len(data_seeds) > 1 else ""
                hooks.data_seed = data_seed
                chain = self_distill(  # the Python API, with the config's DataSplits as its data
                    parts["model_factory"],
                    data,
                    training=spec.train,
                    rounds=spec.rounds,
                    seeds=spec.seeds,
                    loss=parts["loss_fn"],
                    xi=spec.xi,
                    device=ctx.device,
                    out_dir=sub,
                    hooks=hooks,
                    dist_ctx=ctx,
                    settings=settings,
                )
                rows += [{"data_seed": int(data_seed), **row} for row in chain.rows]
                if config.early_stopping_comparison:
                    es = run_early_stopping_comparison(
                        data,
                        parts["model_factory"],
                        parts["loss_fn"],
                        spec,
                        chain,
                        device=ctx.device,
                        out_dir=sub,
                        dist_ctx=ctx,
                        settings=settings,
                    )
                    es_rows += [{"data_seed": int(data_seed), **row} for row in es.rows]
                if config.plain_early_stopping:
                    plain_rows += run_plain_early_stopping(
                        data,
                        parts["model_factory"],
                        parts["loss_fn"],
                        spec,
                        data_seed=data_seed,
                        out_dir=sub,
                        settings=settings,
                        device=ctx.device,
                        dist_ctx=ctx,
                    )
        finally:
            hooks.close()
        summary: dict[str, Any] = {
            "name": config.name,
            "data": config.data.name,
            "label_noise": config.data.label_noise,
            "model": config.model.name,
            "loss": config.loss.name,
            "xi": config.loss.xi,
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "seed_axes": {
                "data.seeds": data_seeds,
                "chain.seeds": list(spec.seeds),
                "description": axes_line(data_seeds, spec.seeds),
            },
            **summarize_chain(rows, plain_rows or None),
        }
        es_result = EarlyStoppingResult(rows=es_rows) if config.early_stopping_comparison else None
        if es_result is not None:
            summary["early_stopping"] = es_result.per_round()
        if ctx.is_main:
            atomic_write_csv(out / "rounds.csv", rows, round_columns)
            atomic_write_csv(out / "paired.csv", summary["paired"], PAIRED_COLUMNS)
            if es_result is not None:
                atomic_write_csv(out / "early_stopping.csv", es_rows, ("data_seed",) + ES_COLUMNS)
            if plain_rows:
                atomic_write_csv(out / "plain_early_stopping.csv", plain_rows, PLAIN_COLUMNS)
            if writer is not None:
                for entry in summary["per_round"]:
                    for key in ("train_acc_original", "test_acc", "val_acc", "train_loss_original"):
                        writer.add_scalar(f"mean/{key}", entry[f"{key}_mean"], entry["round"])
                writer.close()
            if plots:
                summary["plots"] = [str(p) for p in _make_plots(out, config.name, es_result is not None)]
            summary["wall_seconds"] = time.perf_counter() - started  # this invocation (a resume: its part)
            # what the rounds cost when they were trained, resumed ones included (rounds.csv's seconds)
            summary["rounds_seconds_total"] = float(sum(float(r["seconds"]) for r in rows))
            atomic_write_json(out / "summary.json", summary)
            if verbose:
                print(f"\n{config.name}: per round over {summary['seed_axes']['description']}")
                print(format_chain(summary, label_noise=config.data.label_noise))
                if es_result is not None:
                    print("\nearly stopping at equal training loss (Figure 6)")
                    print(es_result.table())
                print(
                    f"results in {out} (wall time {summary['wall_seconds']:.1f} s; the rounds took "
                    f"{summary['rounds_seconds_total']:.1f} s in total when they were trained)"
                )
        return summary
    finally:
        if folder is not None:
            folder.release()
        shutdown_distributed(ctx)


def _make_plots(out: Path, title: str, early_stopping: bool) -> list[Path]:
    try:
        from selfdistill.nn.plots import plot_early_stopping, plot_paired, plot_rounds
    except ImportError as err:
        print(f"plots skipped: {err}", file=sys.stderr)
        return []
    paths = list(plot_rounds(out / "rounds.csv", out, title=title) or [])
    paths.append(plot_paired(out / "paired.csv", out / "paired.png", title=title))
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
