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
        "--overwrite",
        "--no-header",
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


# ---- issue 8: CSV header, folder ownership, full disk, one-line errors ----------------------------------


def _write_xy_csv(path, x, y, header="x,y"):
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="")
    return path


def test_the_first_csv_line_is_the_header_as_pandas_reads_it_a_numeric_one_warns(tmp_path, run_cli, capsys):
    import pandas as pd

    x, y = _data(K=15)
    data = tmp_path / "unnamed.csv"
    pd.DataFrame(np.column_stack([x, y])).to_csv(data, index=False)  # pandas writes the header "0,1"
    assert data.read_text().splitlines()[0] == "0,1"
    assert run_cli("--data", data, "--epsilon", 0.1, "--out", tmp_path / "a", "--no-plots") == 0
    err = capsys.readouterr().err
    assert "warning: --data" in err and "header line '0,1' looks numeric" in err and "--no-header" in err
    frame = pd.read_csv(data)  # the independent reading: what a pandas user sees
    result = ChainResult.from_json(tmp_path / "a" / "result.json")
    assert result.n_samples == len(frame) == 15
    np.testing.assert_array_equal(result.labels, frame["1"].to_numpy())
    # --no-header: every line is data (here the "0,1" line becomes a training point, as asked)
    rc = run_cli("--data", data, "--no-header", "--epsilon", 0.1, "--out", tmp_path / "b", "--no-plots")
    assert rc == 0
    assert "warning" not in capsys.readouterr().err
    assert ChainResult.from_json(tmp_path / "b" / "result.json").n_samples == 16


def test_a_pandas_index_column_is_named_in_a_warning(tmp_path, run_cli, capsys):
    import pandas as pd

    x, y = _data(K=12)
    data = tmp_path / "indexed.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(data)  # index=True: an unnamed first column 0..11
    assert run_cli("--data", data, "--epsilon", 0.1, "--out", tmp_path / "o", "--no-plots") == 0
    err = capsys.readouterr().err
    assert "column 0 has no header name and holds 0, 1, ..., 11: it looks like a pandas index" in err


def test_headerless_label_file_and_no_header_for_every_csv(tmp_path, run_cli):
    x, y = _data(K=10)
    np.savetxt(tmp_path / "X.csv", x[:, None], delimiter=",")
    np.savetxt(tmp_path / "y.csv", y[:, None], delimiter=",")
    out = tmp_path / "o"
    assert run_cli("--data", tmp_path / "X.csv", "--labels", tmp_path / "y.csv", "--no-header",
                   "--epsilon", 0.1, "--out", out, "--no-plots") == 0  # fmt: skip
    result = ChainResult.from_json(out / "result.json")
    np.testing.assert_array_equal(result.labels, y)


BAD_INPUTS = {
    # name: (file name, file text, extra options, expected part of the one-line error)
    "missing": (None, None, [], "--data file not found: "),
    "wrong extension": ("d.json", "[1, 2]", [], "unsupported file type '.json'; use .csv or .npz"),
    "empty file": ("d.csv", "", [], "the CSV file is empty"),
    "header only": ("d.csv", "x,y\n", [], "no data rows: the file holds only its header line 'x,y'"),
    "one line, no header": ("d.csv", "0.1,1\n", [], "pass --no-header"),
    "long row": ("d.csv", "x,y\n0.1,1\n0.2,2,3\n", [], "line 3 has 3 fields where 2 are expected"),
    "short row": ("d.csv", "x,y\n0.1,1\n0.2\n0.3,1\n", [], "the labels (y) contain 1 NaN, empty"),
    "NaN": ("d.csv", "x,y\n0.1,1\n0.2,nan\n0.3,1\n", [], "the labels (y) contain 1 NaN"),
    "non-numeric": ("d.csv", "x,y\n0.1,1\n0.2,abc\n", [], "column 'y': non-numeric value 'abc'"),
    "text line with --no-header": ("d.csv", "x,y\n0.1,1\n", ["--no-header"], "like a header: drop --no-h"),
    "unknown target": ("d.csv", "x,y\n0.1,1\n0.2,2\n", ["--target", "z"], "--target 'z' is not a column"),
    "one row": ("d.csv", "x,y\n0.1,1\n", [], "has 1 data row(s); a self-distillation chain needs at least 2"),
    "constant features": ("d.csv", "x,y\n1,1\n1,2\n1,3\n", [], "every training point has the same features"),
    "all-zero labels": ("d.csv", "x,y\n0.1,0\n0.2,0\n", [], "the labels (y) are all zero"),
    "huge labels": ("d.csv", "x,y\n0.1,1e200\n0.2,-1e200\n", [], "y is too large: the sum of its squares"),
    "huge features": ("d.csv", "x,y\n1e200,1\n-1e200,2\n", [], "the features (X) are too large"),
    "epsilon 0": ("d.csv", "x,y\n0.1,1\n", ["--epsilon", "0"], "--epsilon 0 must be a finite number > 0"),
    "epsilon -1": ("d.csv", "x,y\n0.1,1\n", ["--epsilon", "-1"], "--epsilon -1 must be a finite number > 0"),
    "epsilon nan": ("d.csv", "x,y\n0.1,1\n", ["--epsilon", "nan"], "--epsilon nan must be a finite number"),
    "rounds 0": ("d.csv", "x,y\n0.1,1\n", ["--rounds", "0"], "--rounds 0 must be >= 1"),
    "unknown kernel": ("d.csv", "x,y\n0.1,1\n", ["--kernel", "foo"], "--kernel 'foo' is unknown; use one of"),
    "spline outside [0, 1]": ("d.csv", "x,y\n0.1,1\n1.5,2\n", ["--kernel", "spline"], "--kernel spline: "),
    "kernel overflow": ("d.csv", "x,y\n1e110,1\n2e110,2\n", ["--kernel", "polynomial"], "kernel overflows"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_one_line_naming_the_option_and_write_nothing(tmp_path, run_cli, capsys, case):
    name, text, extra, expected = BAD_INPUTS[case]
    data = tmp_path / (name or "missing.csv")
    if text is not None:
        data.write_text(text)
    out = tmp_path / "o"
    assert run_cli("--data", data, *extra, "--out", out) == 2
    err = _one_error_line(capsys)
    assert expected in err, err
    assert "--" in err  # names an option (--data, --epsilon, ...)
    assert not out.exists()


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path, run_cli, capsys):
    data = tmp_path / "obj.npz"
    np.savez(data, X=np.array([[0.1], [0.2], [0.3]], dtype=object), y=np.array([1.0, 2.0, 0.5]))
    assert run_cli("--data", data, "--out", tmp_path / "o") == 2
    err = _one_error_line(capsys)
    assert "array 'X' holds Python objects (dtype=object), which are never loaded" in err
    (tmp_path / "text.npz").write_text("not a zip")
    assert run_cli("--data", tmp_path / "text.npz", "--out", tmp_path / "o") == 2
    assert "is not a NumPy .npz file" in _one_error_line(capsys)


@pytest.fixture
def count_fits(monkeypatch):
    from selfdistill.kernel import KernelSelfDistillation

    calls = []
    original = KernelSelfDistillation.fit

    def fit(self, X, y):
        calls.append(len(X))
        return original(self, X, y)

    monkeypatch.setattr(KernelSelfDistillation, "fit", fit)
    return calls


def test_a_bad_out_is_refused_before_the_fit(tmp_path, run_cli, capsys, count_fits, monkeypatch):
    x, y = _data(K=10)
    data = _write_xy_csv(tmp_path / "d.csv", x, y)
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert run_cli("--data", data, "--out", afile) == 2
    assert f"--out {afile} is a file, not a folder" in _one_error_line(capsys)
    assert run_cli("--data", data, "--out", afile / "sub") == 2
    assert f"--out {afile / 'sub'}: cannot create the output folder" in _one_error_line(capsys)
    import os

    locked = tmp_path / "locked"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(locked) and real_access(p, mode))
    assert run_cli("--data", data, "--out", locked) == 2
    assert f"--out {locked}: the folder is not writable" in _one_error_line(capsys)
    assert count_fits == []


def test_a_second_concurrent_run_is_refused_naming_the_folder(
    tmp_path, run_cli, capsys, count_fits, hold_folder
):
    x, y = _data(K=10)
    data = _write_xy_csv(tmp_path / "d.csv", x, y)
    out = tmp_path / "busy"
    holder = hold_folder(out)
    for extra in ([], ["--overwrite"]):
        assert run_cli("--data", data, "--out", out, *extra) == 2
        err = _one_error_line(capsys)
        assert f"--out {out} is in use by another selfdistill run (held by pid {holder.pid}" in err
    assert count_fits == [] and not (out / "result.json").exists()
    holder.kill()
    holder.wait()
    assert run_cli("--data", data, "--out", out, "--no-plots") == 0  # free once the holder is gone


def test_a_non_empty_out_is_refused_and_overwrite_replaces_the_whole_earlier_run(tmp_path, run_cli, capsys):
    x, y = _data(K=12, seed=3)
    xt = np.linspace(0, 1, 7)
    np.savez(tmp_path / "first.npz", X=x[:, None], y=y, X_test=xt[:, None], y_test=np.sin(2 * np.pi * xt))
    out = tmp_path / "o"
    assert run_cli("--data", tmp_path / "first.npz", "--gamma", 5, "--out", out) == 0
    first = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert {"test_rounds.csv", "fits.png"} <= set(first)
    capsys.readouterr()
    rng = np.random.default_rng(4)
    X2 = rng.uniform(size=(9, 2))
    np.savez(tmp_path / "second.npz", X=X2, y=X2[:, 0] - X2[:, 1])
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_cli("--data", tmp_path / "second.npz", "--out", out) == 2
    err = _one_error_line(capsys)
    assert f"--out {out} is not empty" in err
    assert "use --overwrite to replace it, or choose another --out" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert run_cli("--data", tmp_path / "second.npz", "--out", out, "--overwrite") == 0
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert "test_rounds.csv" not in names and "fits.png" not in names  # nothing of the first run survives
    assert ChainResult.from_json(out / "result.json").n_samples == 9
    assert json.loads((out / "run.json").read_text())["K"] == 9


def test_a_failed_overwrite_keeps_the_earlier_run(tmp_path, run_cli, capsys):
    x, y = _data(K=12)
    data = _write_xy_csv(tmp_path / "d.csv", x, y)
    out = tmp_path / "o"
    assert run_cli("--data", data, "--out", out, "--no-plots") == 0
    kept = (out / "result.json").read_bytes()
    assert run_cli("--data", data, "--epsilon", 50, "--out", out, "--overwrite") == 2  # collapses at round 0
    assert "collapses the chain at round 0" in _one_error_line(capsys)
    assert (out / "result.json").read_bytes() == kept


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
@pytest.mark.parametrize("fail_after", [0, 3])
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, run_cli, capsys, monkeypatch, code, fail_after):
    import errno
    import os

    x, y = _data(K=10)
    data = _write_xy_csv(tmp_path / "d.csv", x, y)
    out = tmp_path / "o"
    number = getattr(errno, code)
    real_fsync, calls = os.fsync, []

    def full_disk(fd):  # every atomic write flushes with fsync; the disk fills after `fail_after` of them
        calls.append(fd)
        if len(calls) > fail_after:
            raise OSError(number, os.strerror(number))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert run_cli("--data", data, "--out", out) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"selfdistill kernel: error: --out {out}: {os.strerror(number).lower()}")
    assert "free space on that disk or choose another --out, then run the command again with --overwrite" in (
        err
    )
    if fail_after == 0:  # nothing was written: the folder this run created is gone
        assert not out.exists()
        return
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert run_cli("--data", data, "--out", out) == 2  # the incomplete run is not silently extended
    assert "is not empty" in _one_error_line(capsys)
    assert run_cli("--data", data, "--out", out, "--overwrite") == 0


def test_every_figure_is_rendered_in_memory_then_moved_into_place(tmp_path, run_cli, monkeypatch):
    import io

    from matplotlib.figure import Figure

    targets = []
    original = Figure.savefig

    def spy(self, fname, *args, **kwargs):
        targets.append(fname)
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    x, y = _data(K=10)
    assert run_cli("--data", _write_xy_csv(tmp_path / "d.csv", x, y), "--out", tmp_path / "o") == 0
    assert len(targets) == 4 and all(isinstance(t, io.BytesIO) for t in targets)


def test_default_out_is_untracked_runs_folder():
    import argparse

    from selfdistill.experiments import kernel_run

    parser = argparse.ArgumentParser()
    kernel_run.add_arguments(parser)
    assert str(parser.parse_args(["--data", "d.csv"]).out) == "runs/kernel"
