"""Figures of neural self-distillation results (Mobahi et al. 2020, Figures 4, 5 and 6), from CSV files.

Inputs are the files a chain writes (:mod:`selfdistill.nn.chain`, :mod:`selfdistill.nn.early_stopping`):

- ``rounds.csv``: one row per (seed, round) with at least ``seed, round, train_acc_original,
  train_loss_original, target_loss, val_acc, test_acc, val_loss, test_loss, steps, seconds``.
- ``early_stopping.csv``: one row per (seed, round) with ``seed, round, sd_train_loss, sd_test_acc,
  es_steps, es_reached, es_train_loss, es_test_acc``.

Every curve is the mean over seed units (a unit is one (data seed, model seed) pair when the CSV has a
``data_seed`` column, else one seed) with a band showing the 95 % t interval of that mean (scipy's
``t.interval``; no band with a single unit). NaN entries are left out. :func:`plot_paired` draws paired
differences (``paired.csv`` of a chain or a distillation run) with their intervals. Matplotlib is
imported lazily; figures are drawn on its Agg canvas without pyplot, so nothing global (backend, open
figures) changes. The CSV files are read with the csv module (pandas is not a dependency).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfdistill.io import atomic_save_figure

__all__ = [
    "RoundSummary",
    "plot_compare",
    "plot_paired",
    "plot_early_stopping",
    "plot_rounds",
    "read_results_csv",
    "summarize_by_round",
]

_LABELS = {
    "train_acc_original": "train accuracy on original labels",
    "train_acc_clean": "train accuracy on clean labels",
    "train_loss_original": "train loss on original labels",
    "target_loss": "loss on the round's targets",
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "val_loss": "validation loss",
    "test_loss": "test loss",
}


def _parse(value: str) -> float:
    text = value.strip()
    if text == "":
        return math.nan
    lowered = text.lower()
    if lowered in ("true", "false"):
        return 1.0 if lowered == "true" else 0.0
    return float(text)


def read_results_csv(path: str | Path, required: Sequence[str] = ("seed", "round")) -> dict[str, np.ndarray]:
    """Read a results CSV into ``{column: float array}`` (booleans as 0/1, empty cells as NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty (no header row)")
        columns = list(reader.fieldnames)
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; it has {', '.join(columns)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    table: dict[str, np.ndarray] = {}
    for col in columns:
        try:
            table[col] = np.array([_parse(r[col] or "") for r in rows], dtype=np.float64)
        except ValueError:
            continue  # a non-numeric column (e.g. a label): not plottable, skipped
    return table


@dataclass(frozen=True)
class RoundSummary:
    """Mean, standard deviation and the 95 % t interval of the mean over seeds of one column, per round."""

    column: str
    rounds: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None

    def __str__(self) -> str:
        lines = [f"{self.column}: round  mean  std  (seeds)"]
        lines += [f"  {int(r):3d}  {m:.6g}  {s:.3g}  ({int(n)})"
                  for r, m, s, n in zip(self.rounds, self.mean, self.std, self.count, strict=True)]
        return "\n".join(lines)


def summarize_by_round(table: dict[str, np.ndarray], column: str, rows: np.ndarray | None = None,
                       round_column: str = "round") -> RoundSummary:
    """Mean and sample std (ddof = 1, 0 for one seed) of ``column`` over seeds for each round, ignoring
    NaN; ``rows`` optionally selects rows (boolean mask)."""
    if column not in table:
        raise ValueError(f"column {column!r} not found; available: {', '.join(table)}")
    values, rounds = table[column], table[round_column]
    if rows is not None:
        values, rounds = values[rows], rounds[rows]
    from selfdistill.stats import mean_interval

    uniq = np.unique(rounds[~np.isnan(rounds)])
    means, stds, counts, lows, highs = [], [], [], [], []
    for r in uniq:
        v = values[(rounds == r) & ~np.isnan(values)]
        counts.append(v.size)
        means.append(v.mean() if v.size else math.nan)
        stds.append(v.std(ddof=1) if v.size > 1 else 0.0)
        _, low, high = mean_interval(v.tolist())
        lows.append(low)
        highs.append(high)
    return RoundSummary(column, uniq.astype(int), np.array(means), np.array(stds), np.array(counts),
                        np.array(lows), np.array(highs))  # fmt: skip


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn by the Agg canvas, outside pyplot (no global state, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _band(ax, summary: RoundSummary, label: str, color=None, marker: str = "o") -> None:
    """The mean per round and, with two units or more, a band of the 95 % t interval of the mean."""
    line, = ax.plot(summary.rounds, summary.mean, marker=marker, markersize=4, label=label, color=color)
    if np.any(summary.count > 1) and summary.ci_low is not None:
        ax.fill_between(summary.rounds, summary.ci_low, summary.ci_high, color=line.get_color(), alpha=0.2,
                        linewidth=0)  # fmt: skip


def _units(table: dict[str, np.ndarray]) -> int:
    """Number of seed units: distinct (data_seed, seed) pairs when there is a data_seed column."""
    if "seed" not in table:
        return 0
    keys = [table["seed"]] + ([table["data_seed"]] if "data_seed" in table else [])
    pairs = np.stack(keys, axis=1)
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    return int(np.unique(pairs, axis=0).shape[0]) if pairs.size else 0


def _seeds_note(table: dict[str, np.ndarray]) -> str:
    n = _units(table)
    unit = "seed unit" if "data_seed" in table else "seed"
    return f"mean and 95% t interval of the mean over {n} {unit}{'s' if n != 1 else ''}"


def _finish(fig, ax_list, title: str | None, note: str, path: Path) -> Path:
    for ax in ax_list:
        ax.set_xlabel("self-distillation round")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    heading = f"{title}  ({note})" if title else note
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def _has_values(table: dict[str, np.ndarray], column: str) -> bool:
    return column in table and bool(np.any(~np.isnan(table[column])))


def plot_rounds(rounds_csv: str | Path, out_dir: str | Path, title: str | None = None) -> list[Path]:
    """Figure-4 and Figure-5-style plots of a chain; returns the PNG paths.

    ``rounds_train.png``: train accuracy and train loss on the ORIGINAL labels vs round (Figure 4; the
    accuracy on clean labels is added when the CSV has ``train_acc_clean``, i.e. with label noise).
    ``rounds_test.png``: test and validation accuracy vs round (Figure 5), and test / validation loss.
    """
    table = read_results_csv(rounds_csv, required=("seed", "round", "train_acc_original",
                                                   "train_loss_original", "val_acc", "test_acc"))
    out_dir = Path(out_dir)
    note = _seeds_note(table)
    paths = []

    fig = _figure((10, 4))
    ax_acc, ax_loss = fig.subplots(1, 2)
    _band(ax_acc, summarize_by_round(table, "train_acc_original"), "original labels")
    if _has_values(table, "train_acc_clean"):
        _band(ax_acc, summarize_by_round(table, "train_acc_clean"), "clean labels", marker="s")
        ax_acc.legend()
    ax_acc.set_ylabel("train accuracy")
    ax_acc.set_title("train accuracy on original labels")
    _band(ax_loss, summarize_by_round(table, "train_loss_original"), "train loss")
    ax_loss.set_ylabel("train loss (original labels)")
    ax_loss.set_title("train loss on original labels")
    paths.append(_finish(fig, (ax_acc, ax_loss), title, note, out_dir / "rounds_train.png"))

    loss_columns = [c for c in ("test_loss", "val_loss") if _has_values(table, c)]
    fig = _figure((10 if loss_columns else 5.5, 4))
    axes = fig.subplots(1, 2 if loss_columns else 1, squeeze=False)
    ax_acc = axes[0, 0]
    _band(ax_acc, summarize_by_round(table, "test_acc"), "test")
    _band(ax_acc, summarize_by_round(table, "val_acc"), "validation", marker="s")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("test and validation accuracy")
    ax_acc.legend()
    if loss_columns:
        ax_l = axes[0, 1]
        for col, marker in zip(loss_columns, ("o", "s"), strict=False):
            _band(ax_l, summarize_by_round(table, col), col.replace("_loss", ""), marker=marker)
        ax_l.set_ylabel("loss (true labels)")
        ax_l.set_title("test and validation loss")
        ax_l.legend()
    paths.append(_finish(fig, list(axes.ravel()), title, note, out_dir / "rounds_test.png"))
    return paths


def _half_widths(summary: RoundSummary) -> np.ndarray:
    """``[[mean - low], [high - mean]]`` of the interval of the mean (0 where there is none)."""
    if summary.ci_low is None:
        return np.zeros((2, summary.mean.size))
    low = np.where(np.isfinite(summary.ci_low), summary.mean - summary.ci_low, 0.0)
    high = np.where(np.isfinite(summary.ci_high), summary.ci_high - summary.mean, 0.0)
    return np.stack([low, high])


def plot_early_stopping(es_csv: str | Path, out_dir: str | Path, title: str | None = None) -> list[Path]:
    """Figure-6-style plot: test accuracy against training loss (original labels) for the self-distilled
    model of each round and for early-stopped models at the same training loss; points are means over
    seeds with error bars of the 95 % t interval of the mean in both directions, labelled by round.
    Early-stopping points where some seeds never reached the loss are drawn hollow and marked "k/n
    reached". Returns the PNG path(s)."""
    table = read_results_csv(es_csv, required=("seed", "round", "sd_train_loss", "sd_test_acc",
                                               "es_reached", "es_train_loss", "es_test_acc"))
    sd_loss = summarize_by_round(table, "sd_train_loss")
    sd_acc = summarize_by_round(table, "sd_test_acc")
    es_loss = summarize_by_round(table, "es_train_loss")
    es_acc = summarize_by_round(table, "es_test_acc")
    reached = summarize_by_round(table, "es_reached")   # mean of 0/1 = fraction reached

    fig = _figure((6.5, 4.5))
    ax = fig.subplots()
    ax.errorbar(sd_loss.mean, sd_acc.mean, xerr=_half_widths(sd_loss), yerr=_half_widths(sd_acc), marker="o",
                capsize=3, label="self-distillation (end of round)")
    all_reached = reached.mean >= 1.0 - 1e-12
    color = "tab:orange"
    ax.errorbar(es_loss.mean, es_acc.mean, xerr=_half_widths(es_loss), yerr=_half_widths(es_acc), fmt="none",
                ecolor=color, capsize=3)
    ax.plot(es_loss.mean, es_acc.mean, linestyle="--", color=color, alpha=0.6)
    ax.scatter(es_loss.mean[all_reached], es_acc.mean[all_reached], marker="s", color=color, zorder=3,
               label="early stopping at equal train loss")
    if np.any(~all_reached):
        ax.scatter(es_loss.mean[~all_reached], es_acc.mean[~all_reached], marker="s", facecolors="white",
                   edgecolors=color, zorder=3, label="early stopping: loss not reached by every seed")
    for r, x, y in zip(sd_loss.rounds, sd_loss.mean, sd_acc.mean, strict=True):
        ax.annotate(str(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for i, (x, y) in enumerate(zip(es_loss.mean, es_acc.mean, strict=True)):
        if not all_reached[i]:
            k = int(round(reached.mean[i] * reached.count[i]))
            ax.annotate(f"{k}/{int(reached.count[i])} reached", (x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color=color)
    losses = np.concatenate([sd_loss.mean, es_loss.mean])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size and losses.max() / losses.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("train loss on original labels")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    note = _seeds_note(table) + "; numbers = round"
    ax.set_title(f"{title}\n({note})" if title else note, fontsize=10)
    fig.tight_layout()
    return [atomic_save_figure(fig, Path(out_dir) / "early_stopping.png")]


def plot_compare(runs: Sequence[tuple[str, str | Path]], out_path: str | Path,
                 metrics: Sequence[str] = ("test_acc", "train_acc_original"),
                 title: str | None = None) -> Path:
    """Several chains on one figure (e.g. soft vs hard labels, or losses): one panel per metric, one
    curve (mean with its 95 % interval over seeds) per ``(label, rounds_csv)`` in ``runs``. Returns
    ``out_path``."""
    if not runs:
        raise ValueError("runs must list at least one (label, rounds_csv) pair")
    if not metrics:
        raise ValueError("metrics must name at least one column")
    tables = [(label, read_results_csv(path, required=("seed", "round", *metrics))) for label, path in runs]
    fig = _figure((5.2 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    markers = "os^vDP*X"
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (label, table) in enumerate(tables):
            _band(ax, summarize_by_round(table, metric), label, marker=markers[i % len(markers)])
        ax.set_ylabel(_LABELS.get(metric, metric))
        ax.set_title(_LABELS.get(metric, metric))
        ax.legend(fontsize=8)
    seeds = sorted({_units(t) for _, t in tables})
    note = f"mean and 95% t interval of the mean over {'/'.join(map(str, seeds))} seed units"
    return _finish(fig, list(axes[0]), title, note, Path(out_path))


def _short_arm(name: str) -> str:
    """Short tick labels: ``round_3`` -> ``3``, the chain's chosen round and plain model by name."""
    if name.startswith("round_"):
        return name[len("round_"):]
    return {"val_chosen_round": "chosen", "plain_early_stopped": "plain ES"}.get(name, name)


def read_paired_csv(path: str | Path) -> list[dict[str, object]]:
    """Rows of a ``paired.csv`` (chain or distillation): strings for ``comparison``, ``a``, ``b``, ``metric``
    and ``verdict``, numbers for the rest (empty cells as NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paired-comparison file {path} does not exist")
    text_columns = {"comparison", "a", "b", "metric", "verdict", "excludes_zero"}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append({k: (v if k in text_columns else _parse(v or "")) for k, v in row.items()})
    return out


def plot_paired(
    paired: str | Path | Sequence[dict[str, object]],
    out_path: str | Path,
    *,
    title: str | None = None,
    scale: float = 100.0,
    ylabel: str = "test accuracy difference (points)",
    ax=None,
) -> Path | None:
    """Paired differences ``a - b`` as points with their 95 % t interval (thick) and, where reported, the
    interval over clusters (data seeds or teachers: thin, lighter), one column per comparison, a line at
    zero; intervals that exclude zero are drawn dark, the others grey. ``paired``: a ``paired.csv`` path or
    its rows. Values are multiplied by ``scale`` (100: percentage points). Returns the PNG path (None when
    drawn into a given ``ax``)."""
    rows = read_paired_csv(paired) if isinstance(paired, str | Path) else list(paired)
    if not rows:
        raise ValueError("plot_paired: no comparisons to plot")
    fig = None
    if ax is None:
        fig = _figure((max(5.0, 0.45 * len(rows) + 2.0), 5.4))
        ax = fig.subplots()
    x = np.arange(len(rows))
    for i, row in enumerate(rows):
        mean, low, high = (scale * float(row[k]) for k in ("mean", "ci_low", "ci_high"))  # type: ignore[arg-type]
        excludes = np.isfinite(low) and (low > 0 or high < 0)
        color = "tab:blue" if excludes else "tab:gray"
        if np.isfinite(low):
            ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color=color, capsize=4,
                        elinewidth=2)  # fmt: skip
        else:
            ax.plot([i], [mean], "o", color=color)
        c_low, c_high = row.get("cluster_ci_low"), row.get("cluster_ci_high")
        if c_low is not None and np.isfinite(float(c_low)):  # type: ignore[arg-type]
            c_mean = scale * float(row.get("cluster_mean", row["mean"]))  # type: ignore[arg-type]
            lo, hi = scale * float(c_low), scale * float(c_high)  # type: ignore[arg-type]
            ax.errorbar([i + 0.18], [c_mean], yerr=[[c_mean - lo], [hi - c_mean]], fmt=".", color=color,
                        alpha=0.5, capsize=2, elinewidth=1)  # fmt: skip
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{_short_arm(str(r['a']))} \u2212 {_short_arm(str(r['b']))}" for r in rows],
                       rotation=60, ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    n = sorted({int(float(r["n"])) for r in rows})  # type: ignore[arg-type]
    note = (f"paired mean and 95% t interval, n = {'/'.join(map(str, n))} units; thin: interval over "
            "clusters (data seeds / teachers) where reported")  # fmt: skip
    ax.set_title(f"{title}\n({note})" if title else note, fontsize=9)
    if fig is None:
        return None
    fig.tight_layout()
    return atomic_save_figure(fig, Path(out_path))
