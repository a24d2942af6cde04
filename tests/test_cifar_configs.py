"""The shipped CIFAR configs (GPU-sized) run end to end on the CPU at a trivial budget, on small folders
written in the official CIFAR format: same code path (torchvision reader, augmentation, ResNet-50 / VGG-16,
teacher on augmented batches, checkpoints), only the sizes and budgets changed with --set."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
from cifar_files import fake_cifar10, fake_cifar100

from selfdistill.cli import main as cli_main


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NOT verified")  # fake files: no official MD5
        yield


def _sets(*values):
    return [arg for value in values for arg in ("--set", value)]


@pytest.mark.parametrize(
    ("config", "writer"),
    [("cifar10_resnet50_l2", fake_cifar10), ("cifar100_vgg16_l2", fake_cifar100)],
)
def test_cifar_chain_config_runs_and_resumes(config, writer, tmp_path):
    writer(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", config, "--out", str(out), "--data-root", str(tmp_path / "data"), "--no-progress",
            "--no-plots", *_sets("optimizer.steps=2", "optimizer.batch_size=8", "chain.rounds=2",
                                 "chain.seeds=1", "data.verify_checksums=false", "device=cpu")]  # fmt: skip
    assert cli_main(argv) == 0
    with open(out / "rounds.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["seed"]), int(r["round"]), int(r["steps"])) for r in rows] == [(0, 0, 2), (0, 1, 2)]
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
    assert (out / "data_seed0" / "checkpoints" / "seed0" / "round1.pt").is_file()
    assert cli_main(argv) == 0  # everything finished: the second run only loads the checkpoints
    with open(out / "rounds.csv") as handle:
        assert list(csv.DictReader(handle)) == rows


def test_distill_cifar100_config_runs(tmp_path):
    fake_cifar100(tmp_path / "data", n_train=40, n_test=12)
    out = tmp_path / "run"
    sets = _sets(
        "teacher.optimizer.epochs=1", "teacher.optimizer.batch_size=16",
        "student.optimizer.epochs=1", "student.optimizer.batch_size=16",
        "seeds=1", "methods.temperatures=[4.0]", "methods.label_smoothing=[]",
        "search.n_candidates=3", "data.verify_checksums=false", "device=cpu",
    )  # fmt: skip
    argv = ["distill", "distill_cifar100", "--out", str(out), "--data-root", str(tmp_path / "data"),
            "--no-plots", *sets]  # fmt: skip
    assert cli_main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["kl", "kd_T4", "ptloss_random", "ptloss_selected"]
    transfer = summary["teachers"][0]["transfer"]
    assert transfer["size"] == transfer["teacher_train_size"] == 36  # 10 % validation
