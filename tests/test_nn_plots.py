"""Tests of selfdistill.nn.plots on synthetic results files written by the test."""

import csv
import sys

import numpy as np
import pytest

from selfdistill.nn.plots import (
    plot_compare,
    plot_early_stopping,
    plot_rounds,
    read_results_csv,
    summarize_by_round,
)

ROUND_COLUMNS = ["seed", "round", "train_acc_original", "train_loss_original", "target_loss", "val_acc",
                 "test_acc", "val_loss", "test_loss", "steps", "seconds"]
ES_COLUMNS = ["seed", "round", "sd_train_loss", "sd_test_acc", "es_steps", "es_reached", "es_train_loss",
              "es_test_acc"]


def _write(path, columns, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rounds_rows(seeds=(0, 1, 2), rounds=6, shift=0.0):
    rows = []
    for s in seeds:
        for r in range(rounds):
            rows.append({
                "seed": s, "round": r,
                "train_acc_original": repr(1.0 - 0.03 * r - 0.01 * s),
                "train_loss_original": repr(0.02 + 0.01 * r * r + 0.002 * s),
                "target_loss": repr(0.01 + 0.001 * r),
                "val_acc": repr(0.90 + 0.01 * r - 0.003 * r * r + 0.005 * s + shift),
                "test_acc": repr(0.91 + 0.012 * r - 0.003 * r * r + 0.004 * s + shift),
                "val_loss": repr(0.3 - 0.02 * r + 0.005 * r * r),
                "test_loss": repr(0.31 - 0.02 * r + 0.005 * r * r),
                "steps": 100, "seconds": repr(1.5),
            })
    return rows


def test_read_results_csv_parses_numbers_booleans_and_blanks(tmp_path):
    path = _write(tmp_path / "t.csv", ["seed", "round", "x", "flag"],
                  [{"seed": 0, "round": 0, "x": "1.5", "flag": "True"},
                   {"seed": 0, "round": 1, "x": "", "flag": "False"},
                   {"seed": 0, "round": 2, "x": "nan", "flag": "1"}])
    table = read_results_csv(path)
    np.testing.assert_array_equal(table["flag"], [1.0, 0.0, 1.0])
    assert table["x"][0] == 1.5 and np.isnan(table["x"][1]) and np.isnan(table["x"][2])


def test_read_results_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results_csv(tmp_path / "nope.csv")
    path = _write(tmp_path / "t.csv", ["seed", "x"], [{"seed": 0, "x": 1}])
    with pytest.raises(ValueError, match="lacks the column.*round"):
        read_results_csv(path)
    empty = _write(tmp_path / "e.csv", ["seed", "round"], [])
    with pytest.raises(ValueError, match="no rows"):
        read_results_csv(empty)


def test_summarize_by_round_mean_and_sample_std_ignoring_nan():
    table = {
        "seed": np.array([0, 1, 2, 0, 1, 2], dtype=float),
        "round": np.array([0, 0, 0, 1, 1, 1], dtype=float),
        "v": np.array([1.0, 2.0, 4.0, 3.0, np.nan, 5.0]),
    }
    summary = summarize_by_round(table, "v")
    np.testing.assert_array_equal(summary.rounds, [0, 1])
    # round 0: mean 7/3, sample variance ((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2 = 7/3
    # round 1: NaN dropped -> values 3, 5: mean 4, sample std sqrt(2)
    np.testing.assert_allclose(summary.mean, [7 / 3, 4.0])
    np.testing.assert_allclose(summary.std, [np.sqrt(7 / 3), np.sqrt(2.0)])
    np.testing.assert_array_equal(summary.count, [3, 2])
    assert "round" in str(summary)
    with pytest.raises(ValueError, match="column 'w' not found"):
        summarize_by_round(table, "w")


def _assert_png(path, width, height):
    from matplotlib.image import imread

    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.01  # not a blank canvas


def _open_pyplot_figures():
    plt = sys.modules.get("matplotlib.pyplot")
    return None if plt is None else list(plt.get_fignums())


def test_plot_rounds_writes_two_figures(tmp_path):
    csv_path = _write(tmp_path / "rounds.csv", ROUND_COLUMNS, _rounds_rows())
    before = _open_pyplot_figures()
    paths = plot_rounds(csv_path, tmp_path / "figs", title="digits, MLP, L2 loss")
    assert [p.name for p in paths] == ["rounds_train.png", "rounds_test.png"]
    for p in paths:
        _assert_png(p, 1200, 480)
    assert _open_pyplot_figures() == before  # no pyplot state left behind
    assert not list((tmp_path / "figs").glob(".*tmp*"))  # atomic writes leave no temporary file


def test_plot_rounds_single_seed_and_missing_column(tmp_path):
    one = _write(tmp_path / "one.csv", ROUND_COLUMNS, _rounds_rows(seeds=(0,), rounds=3))
    assert len(plot_rounds(one, tmp_path / "one")) == 2
    bad = _write(tmp_path / "bad.csv", ["seed", "round", "test_acc"],
                 [{"seed": 0, "round": 0, "test_acc": 1}])
    with pytest.raises(ValueError, match="train_acc_original"):
        plot_rounds(bad, tmp_path / "bad")


def test_plot_early_stopping_with_unreached_targets(tmp_path):
    rows = []
    for s in range(3):
        for r in range(5):
            sd_loss = 0.02 + 0.01 * r * r + 0.001 * s
            reached = not (r == 0 and s == 2)  # round 0's loss is the hardest to reach
            rows.append({"seed": s, "round": r, "sd_train_loss": repr(sd_loss),
                         "sd_test_acc": repr(0.9 + 0.01 * r - 0.002 * r * r), "es_steps": 50 * (5 - r),
                         "es_reached": str(reached), "es_train_loss": repr(sd_loss * (1 if reached else 1.5)),
                         "es_test_acc": repr(0.9 - 0.005 * r)})
    csv_path = _write(tmp_path / "early_stopping.csv", ES_COLUMNS, rows)
    paths = plot_early_stopping(csv_path, tmp_path / "figs", title="digits")
    assert [p.name for p in paths] == ["early_stopping.png"]
    _assert_png(paths[0], 780, 540)


def test_plot_compare_soft_vs_hard(tmp_path):
    soft = _write(tmp_path / "soft.csv", ROUND_COLUMNS, _rounds_rows())
    hard = _write(tmp_path / "hard.csv", ROUND_COLUMNS, _rounds_rows(shift=-0.02))
    out = plot_compare([("soft labels", soft), ("hard labels", hard)], tmp_path / "cmp" / "compare.png",
                       title="soft vs hard")
    assert out == tmp_path / "cmp" / "compare.png"
    _assert_png(out, 1248, 480)
    with pytest.raises(ValueError, match="at least one"):
        plot_compare([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks the column.*nonexistent"):
        plot_compare([("a", soft)], tmp_path / "x.png", metrics=("nonexistent",))
