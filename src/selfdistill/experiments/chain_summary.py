"""What a self-distillation run shows, with paired statistics over its seed units.

A unit is one (data seed, model seed) pair: the data seed draws the splits and the label noise, the model
seed the initialization and batch order of every round (:mod:`selfdistill.experiments.config`). Every
comparison is paired over units, with :mod:`selfdistill.stats` (mean of the differences, scipy's t
interval, a bootstrap interval beside it for small samples, and, when several model seeds share a data
seed, the interval over data-seed means, which does not pretend that units of one split are independent):

- every round against round 0 (test accuracy);
- the validation-chosen round against round 0 and against the last round. The round is chosen PER UNIT on
  its validation accuracy (ties: lower validation loss, then the earlier round); test numbers are never
  used to choose;
- with a plain early-stopped model (``plain_early_stopping``): it against round 0, the validation-chosen
  round and the last round.

NumPy/SciPy only (no torch): tested on synthetic rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from selfdistill.stats import PairedComparison, mean_interval, paired_rows

UNIT = ("data_seed", "seed")
CLUSTER = "data_seed"
METRICS = (
    "train_acc_original",
    "train_acc_clean",
    "train_loss_original",
    "target_loss",
    "val_acc",
    "test_acc",
    "val_loss",
    "test_loss",
    "steps",
    "seconds",
)
CHOSEN = "val_chosen_round"
PLAIN = "plain_early_stopped"
PAIRED_COLUMNS = (
    "comparison",
    "a",
    "b",
    "metric",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "boot_low",
    "boot_high",
    "std",
    "confidence",
    "excludes_zero",
    "verdict",
    "n_clusters",
    "cluster_mean",
    "cluster_ci_low",
    "cluster_ci_high",
    "cluster_boot_low",
    "cluster_boot_high",
)


def _unit(row: dict[str, Any]) -> tuple[int, int]:
    return int(row.get("data_seed", 0)), int(row["seed"])


def _finite(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def chosen_rounds(rows: Sequence[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """``{(data seed, model seed): round}`` chosen on validation per unit (highest validation accuracy;
    ties: lower validation loss, then the earlier round). Units without a finite validation accuracy are
    left out."""
    best: dict[tuple[int, int], tuple] = {}
    for row in rows:
        acc, loss = _finite(row["val_acc"]), _finite(row.get("val_loss"))
        if not math.isfinite(acc):
            continue
        key = (acc, -loss if math.isfinite(loss) else -math.inf, -int(row["round"]))
        unit = _unit(row)
        if unit not in best or key > best[unit]:
            best[unit] = key
    return {unit: -key[2] for unit, key in best.items()}


def per_round(rows: Sequence[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per round: the number of units and, for every metric, mean, sample std and the t interval of the
    mean (``{metric}_mean/_std/_ci_low/_ci_high``)."""
    table = []
    for t in sorted({int(r["round"]) for r in rows}):
        at = [r for r in rows if int(r["round"]) == t]
        entry: dict[str, Any] = {"round": t, "num_seeds": len(at)}
        for name in METRICS:
            values = [v for v in (_finite(r.get(name)) for r in at) if math.isfinite(v)]
            mean, low, high = mean_interval(values, confidence)
            std = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1
                else (0.0 if values else math.nan)
            )  # fmt: skip
            entry[f"{name}_mean"], entry[f"{name}_std"] = mean, std
            entry[f"{name}_ci_low"], entry[f"{name}_ci_high"] = low, high
        table.append(entry)
    return table


def _long_table(
    rows: Sequence[dict[str, Any]], plain: Sequence[dict[str, Any]] | None, metric: str
) -> tuple[list[dict[str, Any]], list[int], dict[tuple[int, int], int]]:
    """Arms as rows (``arm``: ``round_t``, :data:`CHOSEN`, :data:`PLAIN`) for :func:`paired_rows`."""
    long = []
    rounds = sorted({int(r["round"]) for r in rows})
    for r in rows:
        long.append({"arm": f"round_{int(r['round'])}", "data_seed": _unit(r)[0], "seed": _unit(r)[1],
                     "value": _finite(r[metric])})  # fmt: skip
    chosen = chosen_rounds(rows)
    by_unit_round = {(_unit(r), int(r["round"])): r for r in rows}
    for unit, t in sorted(chosen.items()):
        long.append({"arm": CHOSEN, "data_seed": unit[0], "seed": unit[1],
                     "value": _finite(by_unit_round[(unit, t)][metric])})  # fmt: skip
    for r in plain or []:
        long.append(
            {"arm": PLAIN, "data_seed": _unit(r)[0], "seed": _unit(r)[1], "value": _finite(r[metric])}
        )
    return long, rounds, chosen


def chain_comparisons(
    rows: Sequence[dict[str, Any]],
    plain: Sequence[dict[str, Any]] | None = None,
    *,
    metric: str = "test_acc",
    confidence: float = 0.95,
) -> list[PairedComparison]:
    """The paired comparisons of the module docstring, in order: round t - round 0 for t >= 1, chosen -
    round 0, chosen - last round, and with ``plain`` rows (one per unit, with ``metric``): plain - round 0,
    plain - chosen, plain - last."""
    long, rounds, chosen = _long_table(rows, plain, metric)
    first, last = f"round_{rounds[0]}", f"round_{rounds[-1]}"
    pairs = [(f"round_{t}", first) for t in rounds[1:]]
    if chosen:
        pairs += [(CHOSEN, first)] + ([(CHOSEN, last)] if len(rounds) > 1 else [])
    if plain:
        pairs += [(PLAIN, first)] + ([(PLAIN, CHOSEN)] if chosen else []) + (
            [(PLAIN, last)] if len(rounds) > 1 else [])  # fmt: skip
    return paired_rows(long, pairs, arm="arm", value="value", unit=UNIT, cluster=CLUSTER,
                       confidence=confidence)  # fmt: skip


def comparison_rows(
    comparisons: Sequence[PairedComparison], metric: str = "test_acc"
) -> list[dict[str, Any]]:
    """The comparisons as rows of ``paired.csv`` (columns :data:`PAIRED_COLUMNS`)."""
    out = []
    for c in comparisons:
        row = c.to_dict()
        out.append(
            {**{k: row.get(k) for k in PAIRED_COLUMNS}, "comparison": f"{c.a} - {c.b}", "metric": metric}
        )
    return out


def best_round_by_mean_val(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The single round with the highest MEAN validation accuracy (ties: lower mean validation loss, then
    the earlier round), with its test accuracy; None without validation."""
    usable = [e for e in table if math.isfinite(e["val_acc_mean"])]
    if not usable:
        return {"round": None, "criterion": "no validation split (val_fraction 0): nothing to select on"}
    best = max(usable, key=lambda e: (e["val_acc_mean"], -_nan_low(e["val_loss_mean"]), -e["round"]))
    return {
        "round": best["round"],
        "criterion": "val_acc_mean",
        "val_acc_mean": best["val_acc_mean"],
        "val_acc_std": best["val_acc_std"],
        "test_acc_mean": best["test_acc_mean"],
        "test_acc_std": best["test_acc_std"],
        "round0_test_acc_mean": table[0]["test_acc_mean"] if table[0]["round"] == 0 else None,
    }


def _nan_low(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def summarize_chain(
    rows: Sequence[dict[str, Any]],
    plain: Sequence[dict[str, Any]] | None = None,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Everything ``summary.json`` holds about the rounds: per-round statistics, the best round by mean
    validation accuracy, the rounds chosen per unit, and the paired comparisons (rows of ``paired.csv``)."""
    table = per_round(rows, confidence)
    chosen = chosen_rounds(rows)
    comparisons = chain_comparisons(rows, plain, confidence=confidence)
    units = sorted({_unit(r) for r in rows})
    summary: dict[str, Any] = {
        "units": [list(u) for u in units],
        "data_seeds": sorted({u[0] for u in units}),
        "model_seeds": sorted({u[1] for u in units}),
        "rounds": [e["round"] for e in table],
        "best_round_by_val": best_round_by_mean_val(table),
        "val_chosen_rounds": [
            {"data_seed": u[0], "seed": u[1], "round": t} for u, t in sorted(chosen.items())
        ],
        "per_round": table,
        "paired": comparison_rows(comparisons),
        "confidence": confidence,
    }
    if plain:
        values = [_finite(r["test_acc"]) for r in plain]
        mean, low, high = mean_interval(values, confidence)
        summary["plain_early_stopped"] = {
            "n": len(plain),
            "test_acc_mean": mean,
            "test_acc_ci_low": low,
            "test_acc_ci_high": high,
            "best_step_mean": sum(float(r["best_step"]) for r in plain) / len(plain),
        }
    return summary


def axes_line(data_seeds: Sequence[int], model_seeds: Sequence[int]) -> str:
    """Which seed axes a run varied, in words."""
    d, m = len(data_seeds), len(model_seeds)
    axes = (("data (split, label noise)", d), ("model (initialization, batch order)", m))
    varied = [name for name, n in axes if n > 1]
    return (
        f"{d} data seed{'s' if d != 1 else ''} (split, label-noise draw) x "
        f"{m} model seed{'s' if m != 1 else ''} "
        f"(initialization, batch order) = {d * m} paired unit{'s' if d * m != 1 else ''}; varied: "
        + (", ".join(varied) if varied else "nothing (one unit: no interval)")
    )


def format_chain(summary: dict[str, Any], *, label_noise: float) -> str:
    """The printed summary: per-round table (noisy and clean training labels named as such; test and
    validation labels are clean) with each round's paired difference to round 0, then the chosen-round and
    early-stopped comparisons, each as mean [95 % interval] in percentage points."""
    noisy = label_noise > 0
    paired = {row["comparison"]: row for row in summary["paired"]}
    cols = [("train_acc_original", "train acc (noisy labels)" if noisy else "train acc")]
    if noisy:
        cols.append(("train_acc_clean", "train acc (clean labels)"))
    cols += [("val_acc", "val acc"), ("test_acc", "test acc")]
    width = 24
    header = f"{'round':>5} " + " ".join(f"{title:>{width}}" for _, title in cols)
    header += f"  {'test acc - round 0, points [95% CI]':>36}"
    lines = [header, "-" * len(header)]
    first = summary["rounds"][0]
    for e in summary["per_round"]:
        cells = [f"{e[f'{c}_mean']:.4f} ± {e[f'{c}_std']:.4f}" for c, _ in cols]
        diff = paired.get(f"round_{e['round']} - round_{first}")
        text = _points(diff) if diff else ""
        lines.append(f"{e['round']:>5} " + " ".join(f"{cell:>{width}}" for cell in cells) + f"  {text:>36}")
    lines.append("(mean ± std over units; validation and test labels are clean)")
    best = summary["best_round_by_val"]
    if best["round"] is not None:
        lines.append(
            f"best round by validation accuracy (mean over units): {best['round']} (val "
            f"{best['val_acc_mean']:.4f}, test {best['test_acc_mean']:.4f} ± {best['test_acc_std']:.4f})"
        )
    chosen = summary["val_chosen_rounds"]
    if chosen:
        counts: dict[int, int] = {}
        for c in chosen:
            counts[c["round"]] = counts.get(c["round"], 0) + 1
        spread = ", ".join(f"round {t}: {n}" for t, n in sorted(counts.items()))
        lines.append(f"validation-chosen round per unit ({spread}):")
    for row in summary["paired"]:
        if row["a"] in (CHOSEN, PLAIN):
            lines.append(f"  {_name(row['a'])} - {_name(row['b'])}: {_points(row)}  {row['verdict']}")
    return "\n".join(lines)


def _name(arm: str) -> str:
    return {CHOSEN: "chosen round", PLAIN: "plain early-stopped model"}.get(arm, arm.replace("_", " "))


def _points(row: dict[str, Any]) -> str:
    """``+m [lo, hi] pp (n=..)`` in percentage points, with the interval over data seeds when reported."""
    if not math.isfinite(row["ci_low"]):
        return f"{100 * row['mean']:+.2f} pp (n={row['n']}, no interval)"
    low, high = 100 * row["ci_low"], 100 * row["ci_high"]
    text = f"{100 * row['mean']:+.2f} [{low:+.2f}, {high:+.2f}] pp (n={row['n']})"
    if row.get("n_clusters"):
        text += f", over {row['n_clusters']} data seeds [{100 * row['cluster_ci_low']:+.2f}, " \
                f"{100 * row['cluster_ci_high']:+.2f}]"  # fmt: skip
    return text
