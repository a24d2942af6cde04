"""DDP: a tiny chain on 2 CPU processes (gloo, launched by torchrun) matches 1 process with the same
global batch.

Tolerance: the two runs differ only in the order of floating-point reductions (each rank averages its half
of the batch, then gloo averages the two gradients). After 2 rounds of 20 Adam steps we allow 1e-5
absolute on losses and accuracies; observed: at most 1.2e-7 (test loss), accuracies identical. A wrong
shard, a missing gradient average or a rank-dependent batch order shows up as differences of 1e-2 or more.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch.distributed as dist
import yaml

TINY = {
    "name": "tiny_ddp",
    "data": {"name": "digits", "subset": 128},
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "loss": {"name": "l2"},
    "optimizer": {"name": "adam", "lr": 0.003, "batch_size": 32, "steps": 20, "eval_every": 5},
    "chain": {"rounds": 2, "seeds": 1},
    "early_stopping_comparison": True,
    "device": "cpu",
    "logging": {"progress": False},
}
METRICS = (
    "train_acc_original",
    "train_loss_original",
    "target_loss",
    "val_acc",
    "test_acc",
    "val_loss",
    "test_loss",
)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def _run(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_match_one_process(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    command = ["-m", "selfdistill", "train", str(config), "--no-plots"]  # as the README documents
    _run([*command, "--out", str(tmp_path / "one")], tmp_path)
    _run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            *command,
            "--out",
            str(tmp_path / "two"),
        ],
        tmp_path,
    )

    one, two = _rows(tmp_path / "one" / "rounds.csv"), _rows(tmp_path / "two" / "rounds.csv")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        assert (a["seed"], a["round"], a["steps"]) == (b["seed"], b["round"], b["steps"])
        for key in METRICS:
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
    es_one = _rows(tmp_path / "one" / "early_stopping.csv")
    es_two = _rows(tmp_path / "two" / "early_stopping.csv")
    assert [r["es_steps"] for r in es_one] == [r["es_steps"] for r in es_two]
    # only rank 0 wrote: one config copy, one set of checkpoints
    assert sorted(p.name for p in (tmp_path / "two" / "data_seed0" / "checkpoints" / "seed0").iterdir()) == [
        "early_stopping.json",
        "round0.pt",
        "round1.pt",
    ]


def test_a_held_folder_is_refused_on_every_rank_without_hanging(tmp_path, hold_folder):
    """Rank 0 takes the folder's lock before any rank writes; when another run holds it, every rank stops
    with the one-line message (the other ranks learn rank 0's outcome instead of waiting forever)."""
    held = tmp_path / "held"
    holder = hold_folder(held, seconds=240)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
             "-m", "selfdistill", "train", str(config), "--no-plots", "--overwrite", "--out", str(held)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        holder.kill()
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert output.count(f"error: --out {held} is in use by another selfdistill run") == 2  # both ranks
    bookkeeping = [".selfdistill.lock", ".selfdistill.owner.json", ".selfdistill.run"]
    assert sorted(p.name for p in held.iterdir()) == bookkeeping  # nothing of the refused run
