"""Paired statistics of the chain and distillation summaries, on synthetic rows, against scipy directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from selfdistill.experiments.chain_summary import (
    CHOSEN,
    PLAIN,
    chain_comparisons,
    chosen_rounds,
    format_chain,
    summarize_chain,
)
from selfdistill.stats import mean_interval, paired_rows

RNG = np.random.default_rng(12)
DATA_SEEDS, MODEL_SEEDS, ROUNDS = (0, 1, 2, 5), (0, 1), 4
# a synthetic chain: test accuracy rises to round 2, then falls; validation follows it with noise
TEST = {
    (d, s, t): 0.80 + 0.02 * min(t, 2) - 0.03 * max(t - 2, 0) + RNG.normal(0, 0.01)
    for d in DATA_SEEDS
    for s in MODEL_SEEDS
    for t in range(ROUNDS)
}
VAL = {key: value + RNG.normal(0, 0.01) for key, value in TEST.items()}


def _rows():
    return [
        {
            "data_seed": d,
            "seed": s,
            "round": t,
            "test_acc": TEST[d, s, t],
            "val_acc": VAL[d, s, t],
            "val_loss": 1 - VAL[d, s, t],
            "train_acc_original": 0.7,
            "train_acc_clean": 0.9,
        }
        for d in DATA_SEEDS
        for s in MODEL_SEEDS
        for t in range(ROUNDS)
    ]


UNITS = [(d, s) for d in DATA_SEEDS for s in MODEL_SEEDS]


def _scipy_interval(a, b):
    return scipy.stats.ttest_rel(a, b).confidence_interval(0.95)


def test_every_round_against_round_0_is_scipys_paired_t_interval():
    comparisons = chain_comparisons(_rows())
    by_name = {(c.a, c.b): c for c in comparisons}
    for t in range(1, ROUNDS):
        a = [TEST[d, s, t] for d, s in UNITS]
        b = [TEST[d, s, 0] for d, s in UNITS]
        c = by_name[f"round_{t}", "round_0"]
        reference = _scipy_interval(a, b)
        assert c.units.n == len(UNITS)
        assert c.units.mean == pytest.approx(np.mean(np.subtract(a, b)), abs=1e-15)
        assert (c.units.ci_low, c.units.ci_high) == pytest.approx((reference.low, reference.high), rel=1e-10)
        # units of one data seed share it: the interval over the data-seed means of the differences
        means = [np.mean([TEST[d, s, t] - TEST[d, s, 0] for s in MODEL_SEEDS]) for d in DATA_SEEDS]
        over = scipy.stats.ttest_1samp(means, 0.0).confidence_interval(0.95)
        assert c.clusters.n == len(DATA_SEEDS)
        assert (c.clusters.ci_low, c.clusters.ci_high) == pytest.approx((over.low, over.high), rel=1e-10)


def test_the_round_is_chosen_per_unit_on_validation_and_compared_with_round_0_and_the_last():
    rows = _rows()
    chosen = chosen_rounds(rows)
    for d, s in UNITS:  # argmax of validation accuracy, recomputed
        assert chosen[d, s] == int(np.argmax([VAL[d, s, t] for t in range(ROUNDS)]))
    by_name = {(c.a, c.b): c for c in chain_comparisons(rows)}
    picked = [TEST[d, s, chosen[d, s]] for d, s in UNITS]
    for other in (0, ROUNDS - 1):
        reference = _scipy_interval(picked, [TEST[d, s, other] for d, s in UNITS])
        c = by_name[CHOSEN, f"round_{other}"]
        assert (c.units.ci_low, c.units.ci_high) == pytest.approx((reference.low, reference.high), rel=1e-10)


def test_ties_in_validation_choose_the_lower_loss_then_the_earlier_round():
    rows = [
        {"data_seed": 0, "seed": 0, "round": 0, "val_acc": 0.9, "val_loss": 0.3, "test_acc": 0.1},
        {"data_seed": 0, "seed": 0, "round": 1, "val_acc": 0.9, "val_loss": 0.2, "test_acc": 0.2},
        {"data_seed": 0, "seed": 0, "round": 2, "val_acc": 0.9, "val_loss": 0.2, "test_acc": 0.3},
    ]
    assert chosen_rounds(rows) == {(0, 0): 1}


def test_a_plain_early_stopped_model_is_paired_with_the_rounds():
    rows = _rows()
    plain = [{"data_seed": d, "seed": s, "test_acc": 0.83 + 0.001 * d, "best_step": 100} for d, s in UNITS]
    summary = summarize_chain(rows, plain)
    paired = {(r["a"], r["b"]): r for r in summary["paired"]}
    chosen = chosen_rounds(rows)
    for b, values in (
        ("round_0", [TEST[d, s, 0] for d, s in UNITS]),
        (CHOSEN, [TEST[d, s, chosen[d, s]] for d, s in UNITS]),
        (f"round_{ROUNDS - 1}", [TEST[d, s, ROUNDS - 1] for d, s in UNITS]),
    ):
        reference = _scipy_interval([p["test_acc"] for p in plain], values)
        row = paired[PLAIN, b]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((reference.low, reference.high), rel=1e-10)
        assert row["n"] == len(UNITS) and row["excludes_zero"] == (reference.low > 0 or reference.high < 0)
    assert summary["plain_early_stopped"]["n"] == len(UNITS)
    # the per-round table carries the t interval of each mean
    mean, low, high = mean_interval([TEST[d, s, 2] for d, s in UNITS])
    entry = summary["per_round"][2]
    assert (entry["test_acc_mean"], entry["test_acc_ci_low"], entry["test_acc_ci_high"]) == pytest.approx(
        (mean, low, high)
    )
    sem = scipy.stats.sem([TEST[u + (2,)] for u in UNITS])
    one = scipy.stats.t.interval(0.95, len(UNITS) - 1, loc=mean, scale=sem)
    assert (low, high) == pytest.approx(one)


def test_the_printed_table_names_noisy_and_clean_labels_and_the_intervals():
    summary = summarize_chain(_rows())
    text = format_chain(summary, label_noise=0.4)
    assert "train acc (noisy labels)" in text and "train acc (clean labels)" in text
    assert "validation and test labels are clean" in text and "pp (n=8)" in text
    assert "chosen round - round 0" in text and f"chosen round - round {ROUNDS - 1}" in text
    clean = format_chain(summary, label_noise=0.0)
    assert "noisy" not in clean and "clean labels)" not in clean


def test_paired_rows_pairs_by_unit_and_refuses_ambiguous_rows():
    rows = [
        {"m": "a", "u": 1, "v": 0.5},
        {"m": "a", "u": 2, "v": 0.7},
        {"m": "a", "u": 3, "v": 0.6},
        {"m": "b", "u": 3, "v": 0.4},
        {"m": "b", "u": 1, "v": 0.45},
        {"m": "b", "u": 2, "v": 0.5},
        {"m": "b", "u": 4, "v": 0.9},  # no partner: left out, n says so
    ]
    (c,) = paired_rows(rows, [("a", "b")], arm="m", value="v", unit=("u",))
    reference = _scipy_interval([0.5, 0.7, 0.6], [0.45, 0.5, 0.4])
    assert c.units.n == 3
    assert (c.units.ci_low, c.units.ci_high) == pytest.approx((reference.low, reference.high))
    assert c.clusters is None
    with pytest.raises(ValueError, match="two rows"):
        paired_rows(rows + [{"m": "a", "u": 1, "v": 0.1}], [("a", "b")], arm="m", value="v", unit=("u",))
    with pytest.raises(ValueError, match="no rows with m='c'"):
        paired_rows(rows, [("a", "c")], arm="m", value="v", unit=("u",))


# ---- distillation ---------------------------------------------------------------------------------


def _distill_runs():
    rng = np.random.default_rng(3)
    offsets = {"kl": 0.0, "kd_T4": 0.02, "ls_0.1": 0.01, "ptloss_selected": 0.025}
    runs = []
    for d in (0, 1, 2):
        teacher_effect = rng.normal(0, 0.02)
        for seed in (0, 1, 2):
            for method, offset in offsets.items():
                value = 0.8 + teacher_effect + offset + rng.normal(0, 0.005)
                runs.append(
                    {
                        "data_seed": d,
                        "teacher_seed": 0,
                        "seed": seed,
                        "method": method,
                        "candidate": None,
                        "temperature": None,
                        "val_accuracy": value + rng.normal(0, 0.003),
                        "test_accuracy": value,
                        "train_loss": 0.1,
                        "seconds": 0.0,
                    }
                )
    return runs


def test_distill_summary_pairs_every_method_and_names_the_key_comparisons(tmp_path):
    from selfdistill.experiments.config import distill_config_from_dict, read_yaml, resolve_config_path
    from selfdistill.experiments.distill import stage_summary

    config = distill_config_from_dict(read_yaml(resolve_config_path("distill_digits")))
    runs = _distill_runs()
    names = ["kl", "kd_T4", "ls_0.1", "ptloss_selected"]
    summary = stage_summary(config, names, {}, [], runs, [], [], tmp_path, plots=False)
    assert len(summary["paired"]) == 6  # every pair of four methods, once
    units = [(d, s) for d in (0, 1, 2) for s in (0, 1, 2)]

    def values(method):
        by = {(r["data_seed"], r["seed"]): r["test_accuracy"] for r in runs if r["method"] == method}
        return [by[u] for u in units]

    for row in summary["paired"]:
        reference = _scipy_interval(values(row["a"]), values(row["b"]))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((reference.low, reference.high), rel=1e-10)
        diffs = np.subtract(values(row["a"]), values(row["b"])).reshape(3, 3).mean(axis=1)  # by teacher
        over = scipy.stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
        assert (row["cluster_ci_low"], row["cluster_ci_high"]) == pytest.approx(
            (over.low, over.high), rel=1e-10
        )
        assert names.index(row["a"]) > names.index(row["b"])  # a - b with b the earlier method in the table
    val_means = {m: np.mean([r["val_accuracy"] for r in runs if r["method"] == m]) for m in names[:3]}
    assert summary["best_baseline"] == max(val_means, key=val_means.get)  # chosen on validation, not test
    keys = {(r["a"], r["b"]) for r in summary["key_comparisons"]}
    assert {("kd_T4", "kl"), ("ls_0.1", "kl"), ("ptloss_selected", "kl")} <= keys
    assert ("ptloss_selected", summary["best_baseline"]) in keys
    text = (tmp_path / "paired.csv").read_text().splitlines()
    assert text[0].startswith("comparison,a,b,metric,n,mean,ci_low,ci_high") and len(text) == 7
    assert all(not math.isnan(r["test_accuracy_ci_low"]) for r in summary["results"])


def test_early_stopping_minus_self_distillation_is_scipys_paired_t_interval_per_round():
    from selfdistill.nn.early_stopping import EarlyStoppingResult

    rng = np.random.default_rng(3)
    rows = []
    for seed in range(6):
        for t in range(3):
            rows.append({"seed": seed, "round": t, "sd_train_loss": 0.3 + 0.01 * t, "es_steps": 100,
                         "es_reached": True, "es_train_loss": 0.3, "sd_test_acc": 0.9 + 0.01 * rng.random(),
                         "es_test_acc": 0.9 + 0.01 * rng.random() + 0.002 * t})  # fmt: skip
    result = EarlyStoppingResult(rows=rows)
    for entry in result.per_round():
        mine = [r for r in rows if r["round"] == entry["round"]]
        ci = scipy.stats.ttest_rel([r["es_test_acc"] for r in mine], [r["sd_test_acc"] for r in mine])
        low, high = ci.confidence_interval(0.95)
        assert (entry["es_minus_sd_ci_low"], entry["es_minus_sd_ci_high"]) == pytest.approx((low, high))
    assert "ES - SD test acc" in result.table() and "[" in result.table().splitlines()[2]
