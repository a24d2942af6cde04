"""`selfdistill kernel` (experiments/kernel_run.py) through selfdistill.cli.main on small generated data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from selfdistill import cli
from selfdistill.kernel import ChainResult, kernel_matrix, self_distill, spline_green


@pytest.fixture
def run_cli(monkeypatch):
    """cli.main restricted to the kernel sub-command (the other sub-commands belong to other modules)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"kernel": cli.SUBCOMMANDS["kernel"]})
    return lambda *argv: cli.main(["kernel", *map(str, argv)])


def _data(K=20, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, K))
    return x, np.sin(2 * np.pi * x) + 0.3 * rng.normal(size=K)


def test_csv_with_target_column_spline_kernel(tmp_path, run_cli, capsys):
    x, y = _data()
    data = tmp_path / "train.csv"
    np.savetxt(data, np.column_stack([y, x]), delimiter=",", header="label,x", comments="")
    out = tmp_path / "out"
    assert (
        run_cli("--data", data, "--target", "label", "--kernel", "spline", "--epsilon", 0.1, "--out", out)
        == 0
    )
    expected = self_distill(spline_green(x[:, None], x[None, :]), y, 0.1)
    result = ChainResult.from_json(out / "result.json")
    np.testing.assert_allclose(result.c, expected.c, rtol=1e-12)
    assert result.status == expected.status == "collapsed"
    with open(out / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == expected.n_rounds
    np.testing.assert_allclose([float(r["c"]) for r in rows], expected.c, rtol=1e-12)
    for name in ("c.png", "norms.png", "b_diag.png", "fits.png", "theory.txt", "run.json"):
        assert (out / name).stat().st_size > 0, name
    printed = capsys.readouterr().out
    assert "c_t" in printed and "collapse at round" in printed and "results written" in printed


def test_npz_with_test_set_rbf_relative_epsilon_fixed_rounds(tmp_path, run_cli):
    x, y = _data(seed=1)
    xt = np.linspace(0, 1, 30)
    yt = np.sin(2 * np.pi * xt)
    data = tmp_path / "d.npz"
    np.savez(data, X=x[:, None], y=y, X_test=xt[:, None], y_test=yt)
    out = tmp_path / "o"
    rc = run_cli("--data", data, "--gamma", 5, "--epsilon", 0.2, "--epsilon-mode", "relative", "--rounds", 2,
                 "--out", out, "--no-plots")  # fmt: skip
    assert rc == 0
    gram = kernel_matrix(x[:, None], kernel="rbf", gamma=5.0)
    expected = self_distill(gram, y, 0.2 * np.mean(y**2), n_rounds=2)
    k_test = kernel_matrix(xt[:, None], x[:, None], kernel="rbf", gamma=5.0)
    with open(out / "test_rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == [0, 1]
    for t, row in enumerate(rows):
        assert float(row["test_mse"]) == pytest.approx(np.mean((expected.predict(k_test, round=t) - yt) ** 2))
    assert not (out / "c.png").exists()
    assert json.loads((out / "run.json").read_text())["epsilon_used"] == [pytest.approx(0.2 * np.mean(y**2))]


def test_separate_label_file_multi_output_and_fixed_c(tmp_path, run_cli):
    x, y = _data(seed=2)
    Y = np.column_stack([y, np.cos(2 * np.pi * x)])
    np.savetxt(tmp_path / "X.csv", x[:, None], delimiter=",")  # no header line
    np.savetxt(tmp_path / "Y.csv", Y, delimiter=",")
    out = tmp_path / "o"
    rc = run_cli("--data", tmp_path / "X.csv", "--labels", tmp_path / "Y.csv", "--alpha", 0.5, "--rounds", 3,
                 "--kernel", "laplacian", "--gamma", 2, "--out", out, "--no-header")  # fmt: skip
    assert rc == 0
    result = ChainResult.from_json(out / "result.json")
    assert result.n_rounds == 3 and result.labels.shape == (20, 2)
    np.testing.assert_allclose(result.c, 0.5 / 20)
    assert "not applicable" in (out / "theory.txt").read_text()


def test_user_errors_are_reported_without_traceback(tmp_path, run_cli, capsys):
    assert run_cli("--data", tmp_path / "missing.csv", "--out", tmp_path / "o") == 2
    assert "not found" in capsys.readouterr().err
    x, y = _data()
    data = tmp_path / "t.csv"
    np.savetxt(data, np.column_stack([x, y]), delimiter=",", header="x,y", comments="")
    assert run_cli("--data", data, "--target", "nope", "--out", tmp_path / "o") == 2
    assert "--target 'nope' is not a column" in capsys.readouterr().err
    paper_x = np.linspace(0, 1, 11)
    paper = tmp_path / "paper.csv"
    labels = np.sin(2 * np.pi * paper_x) + np.r_[0.4, np.zeros(9), 0.6]  # nonzero where the kernel vanishes
    np.savetxt(paper, np.column_stack([paper_x, labels]), delimiter=",", header="x,y", comments="")
    assert run_cli("--data", paper, "--kernel", "spline", "--epsilon", 0.01, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "infeasible" in err and "epsilon >" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n0.1,1\n0.2,\n")
    assert run_cli("--data", bad, "--out", tmp_path / "o") == 2
    assert "NaN" in capsys.readouterr().err


def test_help_lists_the_options(run_cli, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--data",
        "--target",
        "--kernel",
        "--gamma",
        "--epsilon-mode",
        "--rounds",
        "--alpha",
        "--out",
    ):
        assert flag in text


# ---- review fixes ----------------------------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfdistill kernel: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_csv_bad_cells_name_file_row_and_column(tmp_path, run_cli, capsys):
    out = tmp_path / "o"
    bad = tmp_path / "nan.csv"
    bad.write_text("x,y\n0.1,1\n0.2,nan\n0.3,2\n")
    assert run_cli("--data", bad, "--out", out) == 2
    err = _one_error_line(capsys)
    assert "nan.csv: the labels (y) contain 1 NaN" in err and "row(s) 1 " in err
    bad.write_text("x,y\ninf,1\n0.2,3\n0.3,2\n")
    assert run_cli("--data", bad, "--out", out) == 2
    assert "the features (X) contain 1 NaN, empty or infinite" in _one_error_line(capsys)
    bad.write_text("x,y\n0.1,1\n0.2,NA\n0.3,2\n")  # pandas' missing-value marker
    assert run_cli("--data", bad, "--out", out) == 2
    assert "the labels (y) contain 1 NaN, empty or infinite value(s), in data row(s) 1 " in _one_error_line(
        capsys
    )
    bad.write_text("x,y\n0.1,1\n0.2,abc\n0.3,2\n")
    assert run_cli("--data", bad, "--out", out) == 2
    err = _one_error_line(capsys)
    assert "data row 1 (0-based, the header not counted), column 'y': non-numeric value 'abc'" in err
    assert not out.exists()  # nothing written for a failed run


def test_npz_shape_mismatches_and_npz_test_file(tmp_path, run_cli, capsys):
    rng = np.random.default_rng(0)
    X, y = rng.uniform(size=(10, 1)), rng.normal(size=10)
    cases = {
        "X has 10 rows but y has 9": dict(X=X, y=y[:-1]),
        "test features have shape (5, 2) but the training features have 1 column": dict(
            X=X, y=y, X_test=rng.uniform(size=(5, 2)), y_test=np.zeros(5)
        ),
        "X_test has 5 rows but y_test has 4": dict(X=X, y=y, X_test=X[:5], y_test=np.zeros(4)),
        "X_test is given without y_test": dict(X=X, y=y, X_test=X[:5]),
        "the test labels (y_test) contain 1 NaN": dict(X=X, y=y, X_test=X[:2], y_test=np.r_[0.0, np.nan]),
        "X must be 2-D": dict(X=X[:, :, None], y=y),
    }
    for expected, arrays in cases.items():
        np.savez(tmp_path / "d.npz", **arrays)
        assert run_cli("--data", tmp_path / "d.npz", "--out", tmp_path / "o") == 2
        assert expected in _one_error_line(capsys)
    np.savetxt(tmp_path / "t.csv", np.column_stack([X, y]), delimiter=",", header="x,y", comments="")
    assert run_cli("--data", tmp_path / "t.csv", "--test", tmp_path / "d.npz", "--out", tmp_path / "o") == 2
    assert "expected a CSV file" in _one_error_line(capsys)


def test_collapse_at_round_zero_is_an_error_naming_epsilon(tmp_path, run_cli, capsys):
    x, y = _data()
    data = tmp_path / "t.csv"
    np.savetxt(data, np.column_stack([x, y]), delimiter=",", header="x,y", comments="")
    energy = np.mean(y**2)
    assert run_cli("--data", data, "--epsilon", 5, "--out", tmp_path / "o") == 2
    err = _one_error_line(capsys)
    assert "--epsilon 5 (absolute) collapses the chain at round 0" in err
    assert f"use --epsilon < {energy:.6g}" in err
    assert run_cli("--data", data, "--epsilon", 1, "--epsilon-mode", "relative", "--out", tmp_path / "o") == 2
    assert "use --epsilon < 1" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_warnings_are_one_line_and_test_r2_is_a_plain_number(tmp_path, run_cli, capsys):
    x, y = _data(seed=1)
    xt = np.linspace(0, 1, 30)
    yt = np.sin(2 * np.pi * xt)
    np.savez(tmp_path / "d.npz", X=x[:, None], y=y, X_test=xt[:, None], y_test=yt)
    out = tmp_path / "o"
    rc = run_cli("--data", tmp_path / "d.npz", "--gamma", 5, "--epsilon", 0.2, "--epsilon-mode", "relative",
                 "--max-rounds", 1, "--out", out, "--no-plots")  # fmt: skip
    assert rc == 0
    warning = "selfdistill kernel: warning: stopped after max_rounds=1 rounds without collapse"
    assert capsys.readouterr().err.strip() == warning + "; raise max_rounds or epsilon"
    gram = kernel_matrix(x[:, None], kernel="rbf", gamma=5.0)
    pred = self_distill(gram, y, 0.2 * np.mean(y**2), n_rounds=1).predict(
        kernel_matrix(xt[:, None], x[:, None], kernel="rbf", gamma=5.0)
    )
    with open(out / "test_rounds.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    r2 = 1.0 - np.sum((pred - yt) ** 2) / np.sum((yt - yt.mean()) ** 2)
    assert float(row["test_r2"]) == pytest.approx(r2, rel=1e-10)


def test_per_output_c_writes_one_theory_report_per_output(tmp_path, run_cli):
    x, y = _data(K=25, seed=2)
    Y = np.column_stack([y, 0.5 * np.cos(2 * np.pi * x)])
    np.savez(tmp_path / "d.npz", X=x[:, None], y=Y)
    out = tmp_path / "o"
    rc = run_cli("--data", tmp_path / "d.npz", "--gamma", 20, "--epsilon", 0.1, "--epsilon-mode", "relative",
                 "--per-output-c", "--out", out, "--no-plots")  # fmt: skip
    assert rc == 0
    text = (out / "theory.txt").read_text()
    assert "output 0 (its own chain" in text and "output 1 (its own chain" in text
    assert "not applicable" not in text
    gram = kernel_matrix(x[:, None], kernel="rbf", gamma=20.0)
    for j in (0, 1):  # each output's report is the one of column j fitted alone with its own eps
        alone = self_distill(gram, Y[:, j], 0.1 * np.mean(Y[:, j] ** 2)).theory()
        saved = json.loads((out / f"theory_output{j}.json").read_text())
        np.testing.assert_allclose(saved["c_observed"], alone.c_observed, rtol=1e-10)
        assert saved["violations"] == []
