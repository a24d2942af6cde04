"""`selfdistill train CONFIG --out DIR`: every CPU config end to end at a trivial budget, outputs, errors."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import yaml

from selfdistill.experiments import train as train_cmd
from selfdistill.experiments.config import resolve_config_path
from selfdistill.nn.chain import ROUND_COLUMNS
from selfdistill.nn.early_stopping import ES_COLUMNS

TRIVIAL = [
    "optimizer.steps=6",
    "optimizer.eval_every=2",
    "chain.rounds=2",
    "chain.seeds=[0, 1]",
    "data.subset=120",
]


def _run(argv):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return train_cmd.main(parser.parse_args(argv))


def _sets(values):
    return [arg for value in values for arg in ("--set", value)]


@pytest.mark.parametrize(
    "name",
    ["digits_mlp_l2", "digits_mlp_hard", "digits_mlp_early_stopping", "digits_mlp_ptloss", "mnist1d_cnn_l2"],
)
def test_cpu_config_runs_end_to_end(name, tmp_path, capsys):
    out = tmp_path / name
    assert _run([name, "--out", str(out), "--no-progress", *_sets(TRIVIAL)]) == 0
    with open(out / "rounds.csv") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames[: len(ROUND_COLUMNS) + 1]) == ("data_seed",) + ROUND_COLUMNS
        rows = list(reader)
    assert len(rows) == 4 and {int(r["steps"]) for r in rows} == {6}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_round_by_val"]["round"] in (0, 1)
    assert [e["round"] for e in summary["per_round"]] == [0, 1]
    assert (out / "config.yaml").is_file()
    assert (out / "data_seed0" / "checkpoints" / "seed1" / "round1.pt").is_file()
    assert summary["plots"] and all(p.endswith(".png") for p in summary["plots"])
    printed = capsys.readouterr().out
    assert "best round by validation accuracy" in printed and "±" in printed
    if name == "digits_mlp_early_stopping":
        with open(out / "early_stopping.csv") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames) == ("data_seed",) + ES_COLUMNS
            es = list(reader)
        assert len(es) == 4
        for row in es:
            if row["round"] == "0":  # the round-0 trajectory stopped at its own final loss: the same model
                assert row["es_reached"] == "True" and int(row["es_steps"]) == 6
                assert float(row["es_test_acc"]) == float(row["sd_test_acc"])
                assert float(row["es_train_loss"]) == float(row["sd_train_loss"])
            elif row["es_reached"] == "True":
                assert float(row["es_train_loss"]) <= float(row["sd_train_loss"])
    else:
        assert not (out / "early_stopping.csv").exists()


def test_rerunning_the_same_command_resumes_without_training(tmp_path, capsys):
    argv = ["digits_mlp_l2", "--out", str(tmp_path), "--no-progress", "--no-plots", *_sets(TRIVIAL)]
    _run(argv)
    first = (tmp_path / "rounds.csv").read_text()
    _run(argv)
    assert (tmp_path / "rounds.csv").read_text() == first
    assert "resuming" in capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    with open(tmp_path / "rounds.csv") as handle:
        trained = sum(float(r["seconds"]) for r in csv.DictReader(handle))
    assert summary["rounds_seconds_total"] == pytest.approx(trained)  # the resume keeps what training cost


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        _run(["no_such_config", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        _run(["digits_mlp_l2", "--out", str(tmp_path), "--set", "optimizer.steps"])
    with pytest.raises(ValueError, match=r"data.subset=5 leaves 5 training examples, fewer than 10; raise"):
        _run(["digits_mlp_l2", "--out", str(tmp_path / "s"), "--set", "data.subset=5", "--no-progress"])
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match=r"model 'mlp' does not accept \['depth'\]"):
        _run(["digits_mlp_l2", "--out", str(tmp_path / "m"), "--set", "model.depth=3", "--no-progress"])
    with pytest.raises(FileNotFoundError, match="cifar10"):
        _run(
            [
                "cifar10_resnet50_l2",
                "--out",
                str(tmp_path / "c"),
                "--data-root",
                str(tmp_path / "none"),
                "--set",
                "device=cpu",
            ]
        )


def test_the_project_cli_dispatches_train(tmp_path):
    from selfdistill.cli import main

    code = main(
        [
            "train",
            "digits_mlp_l2",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-plots",
            *_sets(["optimizer.steps=3", "chain.rounds=1", "chain.seeds=1", "data.subset=60"]),
        ]
    )
    assert code == 0 and (tmp_path / "rounds.csv").is_file()
    assert (
        main(["train", "digits_mlp_l2", "--out", str(tmp_path), "--set", "optimizer.lr=0.5"]) == 2
    )  # refused


def test_quick_neural_reproduction_writes_results_and_honest_findings(tmp_path, capsys):
    from selfdistill.experiments.neural_reproduce import reproduce_neural

    summary = reproduce_neural(tmp_path, quick=True)
    assert (tmp_path / "rounds.csv").is_file() and (tmp_path / "summary.json").is_file()
    assert [e["round"] for e in summary["per_round"]] == [0, 1, 2, 3]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["findings"] == summary["findings"] and len(summary["findings"]) >= 4
    first = summary["per_round"][0]["train_acc_original_mean"]
    assert f"{first:.4f} at round 0" in summary["findings"][0]  # computed from this run's numbers
    paired = [line for line in summary["findings"] if "paired over seeds" in line]
    last = next(
        r for r in summary["paired"] if r["comparison"] == "round_3 - round_0" and r["metric"] == "test_acc"
    )
    assert any(f"{100 * last['ci_low']:+.2f}" in line for line in paired)  # the interval of the summary
    assert "what this run shows" in capsys.readouterr().out


def test_tensorboard_without_the_package_says_so_and_keeps_csv(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed: ImportError
    _run(
        [
            "digits_mlp_l2",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-plots",
            *_sets(
                [
                    "optimizer.steps=2",
                    "chain.rounds=1",
                    "chain.seeds=1",
                    "data.subset=60",
                    "logging.tensorboard=true",
                ]
            ),
        ]
    )
    assert "pip install tensorboard" in capsys.readouterr().err
    assert (tmp_path / "rounds.csv").is_file()


def test_tensorboard_scalars_equal_rounds_csv(tmp_path):
    pytest.importorskip("tensorboard")  # in the dev extra, so CI runs this test
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["digits_mlp_l2", "--out", str(tmp_path), "--no-progress", "--no-plots"]
    sets = ["optimizer.steps=4", "chain.rounds=2", "chain.seeds=[0, 3]", "data.subset=60"]
    assert _run([*argv, *_sets([*sets, "logging.tensorboard=true"])]) == 0
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    with open(tmp_path / "rounds.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("train_acc_original", "train_loss_original", "target_loss", "val_acc", "test_acc"):
            scalars = {e.step: e.value for e in events.Scalars(f"seed{row['seed']}/{key}")}
            assert scalars[int(row["round"])] == pytest.approx(float(row[key]), rel=1e-6)
    assert [e.step for e in events.Scalars("seed3/round1/batch_loss")] == [1, 2, 3, 4]
    means = {e.step: e.value for e in events.Scalars("mean/test_acc")}
    for t in (0, 1):
        expected = sum(float(r["test_acc"]) for r in rows if int(r["round"]) == t) / 2
        assert means[t] == pytest.approx(expected, rel=1e-6)


def _metric_rows(out) -> list[dict[str, float]]:
    with open(out / "rounds.csv") as handle:
        return [
            {k: float(row[k]) for k in ("train_acc_original", "val_acc", "test_acc", "target_loss")}
            for row in csv.DictReader(handle)
        ]


def test_ptloss_chain_with_zero_epsilon_is_the_kl_chain_and_epsilon_changes_it(tmp_path):
    """PTLoss as the loss of a chain (PTLoss issue, item 5): eps = 0 is KL(p_t || p_s), so the chain must
    match the temperature-1 KL chain; a nonzero eps must change the training."""
    common = ["--no-progress", "--no-plots", *_sets(TRIVIAL)]
    zero = ["--set", "loss.epsilon=[0, 0, 0, 0, 0]"]
    assert _run(["digits_mlp_ptloss", "--out", str(tmp_path / "pt0"), *common, *zero]) == 0
    kl_config = yaml.safe_load(resolve_config_path("digits_mlp_ptloss").read_text())
    kl_config["loss"] = {"name": "kl", "temperature": 1.0, "xi": 1.0}
    (tmp_path / "kl.yaml").write_text(yaml.safe_dump(kl_config))
    assert _run([str(tmp_path / "kl.yaml"), "--out", str(tmp_path / "kl"), *common]) == 0
    assert _run(["digits_mlp_ptloss", "--out", str(tmp_path / "pt"), *common]) == 0
    pt0, kl_rows, pt = (_metric_rows(tmp_path / n) for n in ("pt0", "kl", "pt"))
    for a, b in zip(pt0, kl_rows, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5)
    changed = [
        a["target_loss"] != pytest.approx(b["target_loss"], rel=1e-3) for a, b in zip(pt, pt0, strict=True)
    ]
    assert any(changed)


# ------------------------------------------------------------------------------ a run owns its folder

@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_folder_held_by_another_process_is_refused_with_or_without_overwrite(
    command, tmp_path, capsys, hold_folder
):
    from selfdistill.cli import main

    out = tmp_path / "run"
    proc = hold_folder(out)
    (out / "theirs.csv").write_text("the other run's file\n")
    if command == "train":
        argv = ["train", "digits_mlp_l2", "--no-progress", "--no-plots", *_sets(TRIVIAL)]
    else:
        argv = ["distill", "distill_digits", "--no-plots", "--set", "teacher.optimizer.steps=5"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"selfdistill {command}: error: --out {out} is in use by another")
        assert f"pid {proc.pid}" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["theirs.csv"]


def test_a_running_train_holds_its_folder_against_a_second_process(tmp_path, monkeypatch):
    """While `selfdistill train` runs, a second `selfdistill train --overwrite` into the same --out (a real
    second process) is refused and deletes nothing; the first run finishes with complete results."""
    import os
    import subprocess
    import sys

    import selfdistill.nn.chain as chain_module

    out = tmp_path / "run"
    argv = ["digits_mlp_l2", "--out", str(out), "--no-progress", "--no-plots", *_sets(TRIVIAL)]
    real_train = chain_module.train
    second = {}

    def train(*args, **kwargs):
        if not second:  # during the first round of the first run
            second["done"] = subprocess.run(
                [sys.executable, "-m", "selfdistill", "train", *argv, "--overwrite"],
                capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
        return real_train(*args, **kwargs)

    monkeypatch.setattr(chain_module, "train", train)
    assert _run(argv) == 0
    done = second["done"]
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"--out {out} is in use by another selfdistill run (held by pid {os.getpid()}" in done.stderr
    with open(out / "rounds.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (out / "config.yaml").is_file()
    assert (out / "data_seed0" / "checkpoints" / "seed0" / "round0.pt").is_file()


def test_reproduce_neural_refuses_a_folder_of_another_recipe(tmp_path):
    """The quick recipe does not overwrite a full run (or the reverse): refused with the differing keys."""
    from selfdistill.experiments.config import load_config
    from selfdistill.experiments.neural_reproduce import CONFIG_NAME, QUICK_OVERRIDES, reproduce_neural

    full = load_config(CONFIG_NAME)
    (tmp_path / "config.yaml").write_text(full.to_yaml())
    (tmp_path / "rounds.csv").write_text("the full run's numbers\n")
    with pytest.raises(ValueError, match=r"holds a neural run of another recipe \(optimizer.steps: 1000 in"):
        reproduce_neural(tmp_path, quick=True)
    assert (tmp_path / "rounds.csv").read_text() == "the full run's numbers\n"
    assert "steps: 1000" in (tmp_path / "config.yaml").read_text()
    quick = load_config(CONFIG_NAME, QUICK_OVERRIDES)
    assert quick.optimizer.steps == 400


def test_plain_early_stopping_keeps_the_best_validation_check_of_round_0s_trajectory(tmp_path, capsys):
    """The plain model is round 0 trained again (same seeds, same trajectory), kept at its best validation
    check: with one check (eval_every >= steps) it IS round 0; with several, its validation accuracy is at
    least round 0's and its comparisons with the rounds are in paired.csv and the printed summary."""
    sets = ["optimizer.steps=12", "chain.rounds=2", "chain.seeds=[0, 1]", "data.subset=150",
            "data.seeds=[0, 2]", "plain_early_stopping=true"]
    one = tmp_path / "one"
    assert _run(["digits_mlp_l2", "--out", str(one), "--no-progress", "--no-plots",
                 *_sets([*sets, "optimizer.eval_every=12"])]) == 0
    with open(one / "plain_early_stopping.csv") as handle:
        plain = {(r["data_seed"], r["seed"]): r for r in csv.DictReader(handle)}
    with open(one / "rounds.csv") as handle:
        round0 = {(r["data_seed"], r["seed"]): r for r in csv.DictReader(handle) if r["round"] == "0"}
    assert sorted(plain) == sorted(round0) and len(plain) == 4
    for unit, row in plain.items():
        assert row["checks"] == "1" and row["best_step"] == "12"
        assert float(row["test_acc"]) == float(round0[unit]["test_acc"])
        assert float(row["val_acc"]) == float(round0[unit]["val_acc"])

    several = tmp_path / "several"
    assert _run(["digits_mlp_l2", "--out", str(several), "--no-progress", "--no-plots",
                 *_sets([*sets, "optimizer.eval_every=3"])]) == 0
    printed = capsys.readouterr().out
    assert "plain early-stopped model - round 0" in printed
    assert "plain early-stopped model - chosen round" in printed
    with open(several / "plain_early_stopping.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert row["checks"] == "4" and int(row["best_step"]) in (3, 6, 9, 12)
        unit = (row["data_seed"], row["seed"])
        assert float(row["val_acc"]) >= float(round0[unit]["val_acc"])
        assert float(row["final_test_acc"]) == float(round0[unit]["test_acc"])  # the same trajectory
    with open(several / "paired.csv") as handle:
        comparisons = {(r["a"], r["b"]) for r in csv.DictReader(handle)}
    assert ("plain_early_stopped", "round_0") in comparisons
    assert ("plain_early_stopped", "val_chosen_round") in comparisons
    summary = json.loads((several / "summary.json").read_text())
    assert summary["seed_axes"]["data.seeds"] == [0, 2] and summary["wall_seconds"] > 0
