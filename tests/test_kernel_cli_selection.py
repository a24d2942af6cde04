"""`selfdistill kernel --rounds auto --selection ... --xi ...` through selfdistill.cli.main."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from selfdistill import cli
from selfdistill.kernel import ChainResult, KernelSelfDistillation
from selfdistill.kernel.mixing import MixedChainResult


@pytest.fixture
def run_cli(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"kernel": cli.SUBCOMMANDS["kernel"]})
    return lambda *argv: cli.main(["kernel", *map(str, argv)])


def _csv(tmp_path, K=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    y = np.sin(3 * X[:, 0]) + 0.3 * rng.normal(size=K)
    path = tmp_path / "train.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,y", comments="")
    return path, X, y


@pytest.mark.parametrize("selection", ["gcv", "kfold"])
def test_rounds_auto_writes_the_selection_and_the_chosen_rounds(tmp_path, run_cli, capsys, selection):
    data, X, y = _csv(tmp_path)
    out = tmp_path / "out"
    argv = ["--data", data, "--target", "y", "--gamma", 1.0, "--epsilon", 0.01, "--rounds", "auto"]
    assert run_cli(*argv, "--selection", selection, "--n-folds", 4, "--random-state", 2, "--out", out) == 0
    est = KernelSelfDistillation(
        gamma=1.0, epsilon=0.01, n_rounds="auto", selection=selection, n_folds=4, random_state=2
    ).fit(X, y)
    result = ChainResult.from_json(out / "result.json")
    assert result.n_rounds == est.n_rounds_
    with open(out / "selection.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == est.full_result_.n_rounds
    assert [r["chosen"] for r in rows].index("True") == est.n_rounds_ - 1
    np.testing.assert_allclose([float(r[selection]) for r in rows], est.selection_.scores, rtol=1e-12)
    assert (out / "selection.png").exists() and (out / "selection.json").exists()
    assert f"selection by {selection}" in capsys.readouterr().out


def test_xi_with_alpha_reloads_as_a_mixed_chain(tmp_path, run_cli):
    data, X, y = _csv(tmp_path)
    out = tmp_path / "mix"
    argv = ["--data", data, "--target", "y", "--gamma", 1.0, "--alpha", 0.1, "--xi", 0.5, "--rounds", 4]
    assert run_cli(*argv, "--out", out, "--no-plots") == 0
    result = MixedChainResult.from_json(out / "result.json")
    np.testing.assert_allclose(result.xi_rounds, [0, 0.5, 0.5, 0.5])
    assert "not applicable" in (out / "theory.txt").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rounds", "auto", "--selection", "holdout", "--holdout-fraction", 1.5], "holdout_fraction=1.5"),
        (["--rounds", "auto", "--selection", "kfold", "--n-folds", 50], "n_folds=50"),
        (["--xi", "nan"], "xi=nan is not finite"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, run_cli, capsys, extra, message):
    data, _, _ = _csv(tmp_path)
    code = run_cli("--data", data, "--target", "y", "--epsilon", 0.01, *extra, "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("selfdistill kernel: error:")
    assert len(err.strip().splitlines()) == 1


def test_rounds_must_be_a_positive_integer_or_auto(tmp_path, run_cli, capsys):
    data, _, _ = _csv(tmp_path)
    assert run_cli("--data", data, "--rounds", "0", "--out", tmp_path / "o") == 2
    assert "--rounds 0 must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run_cli("--data", data, "--rounds", "many", "--out", tmp_path / "o")
    assert info.value.code == 2 and "positive integer or 'auto'" in capsys.readouterr().err
