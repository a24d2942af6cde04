"""`selfdistill study` (experiments/kernel_study.py) at a tiny scale: the same code as the full study."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats
from sklearn.kernel_ridge import KernelRidge

from selfdistill import cli
from selfdistill.experiments import kernel_study as study


def test_paired_differences_are_scipys_paired_t_interval_and_the_verdicts():
    diff = np.array([-0.3, -0.1, -0.25, -0.2, 0.05])
    ridge = np.array([1.0, 1.2, 0.9, 1.1, 1.05])
    rows = [
        {"dataset": "d", "noise": 0.5, "seed": s, "method": m, "test_mse": float(v)}
        for s in range(5)
        for m, v in (("sd", ridge[s] + diff[s]), ("ridge", ridge[s]))
    ]
    (row,) = study.paired(rows, pairs=(("sd", "ridge"),))
    ci = stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)
    assert row["mean_difference"] == pytest.approx(diff.mean())
    assert row["ci95_low"] == pytest.approx(ci.low) and row["ci95_high"] == pytest.approx(ci.high)
    assert row["std_difference"] == pytest.approx(diff.std(ddof=1)) and row["verdict"] == "tie"
    assert study.verdict(-0.3, -0.01) == "wins" and study.verdict(0.01, 0.2) == "loses"
    assert study.verdict(-0.1, 0.1) == "tie" and study.verdict(float("nan"), float("nan")) == "n/a"


def test_one_unit_reports_every_method_and_the_ridge_row_is_sklearn_kernel_ridge_tuned_on_validation():
    rows, selection = study.run_unit("diabetes", 0.5, seed=3, n_max=80)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == set(study.METHODS)
    assert by_method["sd_oracle"]["test_mse"] <= by_method["sd"]["test_mse"] + 1e-12
    split = study.make_split("diabetes", 0.5, 3, 80)
    alpha = float(by_method["ridge"]["param"].split("=")[1])
    model = KernelRidge(alpha=alpha, kernel="precomputed").fit(split.gram, split.y_train)
    assert np.mean((model.predict(split.k_test) - split.y_test) ** 2) == pytest.approx(
        by_method["ridge"]["test_mse"], rel=1e-3  # alpha is printed with 4 digits
    )
    assert {(r["fraction"], r["criterion"]) for r in selection} == {
        (f, c) for f in study.SELECTION_FRACTIONS for c in ("gcv", "holdout", "kfold")
    }
    for r in selection:
        assert r["test_mse_oracle"] <= r["test_mse_chosen"] + 1e-12 and 0 <= r["chosen_round"] < r["n_rounds"]


def test_splits_vary_with_the_seed_and_keep_test_labels_clean():
    a, b = study.make_split("co2", 1.0, 0, 60), study.make_split("co2", 1.0, 1, 60)
    assert not np.allclose(a.y_train, b.y_train)
    clean = study.make_split("co2", 0.0, 0, 60)
    np.testing.assert_allclose(a.y_test, clean.y_test)  # same subset and split, noise only on train/val
    assert not np.allclose(a.y_train, clean.y_train)
    digits = study.make_split("digits", 0.4, 0, 60)
    assert digits.classes and digits.y_train.shape[1] == 10


def test_the_study_command_writes_its_tables_and_figures_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"study": cli.SUBCOMMANDS["study"]})
    out = tmp_path / "study"
    argv = ["study", "--quick", "--datasets", "section4", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "sd - ridge" in text and "gcv" in text
    for name in ("runs.csv", "summary.csv", "paired.csv", "selection.csv", "selection_summary.csv",
                 "section4_paper.csv", "study.png", "paired.png", "selection.png"):  # fmt: skip
        assert (out / name).exists(), name
    with open(out / "paired.csv", newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert {p["comparison"] for p in pairs} == {f"{a} - {b}" for a, b in study.PAIRS}
    assert all(p["verdict"] in ("wins", "ties", "tie", "loses") for p in pairs)
    with open(out / "section4_paper.csv", newline="") as fh:
        paper = {(r["variant"], r["criterion"]): r for r in csv.DictReader(fh)}
    assert paper[("paper", "gcv")]["oracle_round"] == "1"
    runs_before = (out / "runs.csv").read_text()
    assert cli.main(argv) == 0  # every unit is done: resumes without recomputing
    assert (out / "runs.csv").read_text() == runs_before
    assert "[1/" not in capsys.readouterr().out


def test_bad_study_options_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"study": cli.SUBCOMMANDS["study"]})
    assert cli.main(["study", "--datasets", "mnist", "--out", str(tmp_path)]) == 2
    assert "--datasets: unknown ['mnist']" in capsys.readouterr().err
    assert cli.main(["study", "--seeds", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err


def test_a_second_study_into_the_same_folder_is_refused_while_one_runs(tmp_path, monkeypatch, capsys):
    from selfdistill.io import RunFolder

    monkeypatch.setattr(cli, "SUBCOMMANDS", {"study": cli.SUBCOMMANDS["study"]})
    out = tmp_path / "busy"
    with RunFolder(out):
        assert cli.main(["study", "--quick", "--datasets", "section4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is in use by another selfdistill run" in err and len(err.strip().splitlines()) == 1
    assert not (out / "runs.csv").exists()
