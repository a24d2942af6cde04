"""Kill a chain in the middle of a round, run the same command again: identical results and weights."""

from __future__ import annotations

import csv

import pytest
import torch

import selfdistill.nn.chain as chain_module
from selfdistill.experiments.config import config_from_dict
from selfdistill.experiments.train import chain_folder, run_experiment

TINY = {
    "name": "tiny_resume",
    "data": {"name": "digits", "subset": 150},
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "loss": {"name": "l2"},
    "optimizer": {"name": "adam", "lr": 0.003, "batch_size": 32, "steps": 30},
    "chain": {"rounds": 3, "seeds": 2},
    "device": "cpu",
    "logging": {"progress": False},
}


class SimulatedKill(Exception):
    pass


def _read_rows(path):
    with open(path / "rounds.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _ckpt(path, seed, round_index, data_seed=0):
    """The checkpoint of a round of a run folder (the chains of data seed D live in data_seed{D}/)."""
    return chain_module.checkpoint_path(chain_folder(path, data_seed), seed, round_index)


def _weights(path, seed, round_index, data_seed=0):
    return torch.load(_ckpt(path, seed, round_index, data_seed), weights_only=True)["state_dict"]


def _kill_in_training_call(monkeypatch, call_to_kill: int, at_step: int = 10):
    """Make the ``call_to_kill``-th training run of the chain raise at ``at_step`` (like a kill)."""
    real_train = chain_module.train
    calls = {"n": 0}

    def train(*args, **kwargs):
        index = calls["n"]
        calls["n"] += 1
        if index == call_to_kill:
            user_hook = kwargs.get("on_step")

            def on_step(step, loss):
                if user_hook is not None:
                    user_hook(step, loss)
                if step == at_step:
                    raise SimulatedKill(f"killed at step {step}")

            kwargs["on_step"] = on_step
        return real_train(*args, **kwargs)

    monkeypatch.setattr(chain_module, "train", train)


def test_resume_after_a_kill_gives_identical_results(tmp_path, monkeypatch):
    config = config_from_dict(TINY)
    reference = tmp_path / "reference"
    run_experiment(config, reference, plots=False, verbose=False)

    resumed = tmp_path / "resumed"
    # training runs: seed 0 rounds 0,1,2 are calls 0,1,2; seed 1 round 2 is call 5
    with monkeypatch.context() as patch:
        _kill_in_training_call(patch, call_to_kill=5)
        with pytest.raises(SimulatedKill):
            run_experiment(config_from_dict(TINY), resumed, plots=False, verbose=False)
    assert _ckpt(resumed, 1, 1).is_file()
    assert not _ckpt(resumed, 1, 2).exists()
    assert len(_read_rows(resumed)) == 5  # rounds.csv holds every finished round

    # the same command again: only the unfinished round is trained
    with monkeypatch.context() as patch:
        real_train = chain_module.train
        trained = []
        patch.setattr(chain_module, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
        run_experiment(config_from_dict(TINY), resumed, plots=False, verbose=False)
    assert len(trained) == 1

    assert _read_rows(resumed) == _read_rows(reference)  # every metric column, bit for bit
    for seed in (0, 1):
        for t in range(3):
            a, b = _weights(reference, seed, t), _weights(resumed, seed, t)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_corrupted_checkpoint_is_recomputed_identically(tmp_path):
    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=False)
    before = _read_rows(tmp_path)
    last = _ckpt(tmp_path, 1, 2)
    weights = _weights(tmp_path, 1, 2)
    last.write_bytes(b"truncated")
    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=False)
    assert _read_rows(tmp_path) == before
    after = _weights(tmp_path, 1, 2)
    assert all(torch.equal(weights[k], after[k]) for k in weights)


def test_refuses_to_resume_with_a_different_config_unless_overwrite(tmp_path):
    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=False)
    changed = {**TINY, "optimizer": {**TINY["optimizer"], "lr": 0.01}}
    with pytest.raises(ValueError, match=r"--out .*different config(.|\n)*optimizer\.lr: 0\.003 .* 0\.01"):
        run_experiment(config_from_dict(changed), tmp_path, plots=False, verbose=False)
    # more rounds is an extension, not a different experiment: allowed, and the old rounds are reused
    longer = {**TINY, "chain": {"rounds": 4, "seeds": [0]}}
    summary = run_experiment(config_from_dict(longer), tmp_path, plots=False, verbose=False)
    assert summary["rounds"] == [0, 1, 2, 3]
    run_experiment(config_from_dict(changed), tmp_path, overwrite=True, plots=False, verbose=False)
    assert not _ckpt(tmp_path, 0, 3).exists()  # the old run was discarded
    assert "lr: 0.01" in (tmp_path / "config.yaml").read_text()


def _count_training(monkeypatch):
    real_train = chain_module.train
    trained = []
    monkeypatch.setattr(chain_module, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    return trained


def test_a_checkpoint_damaged_inside_its_weights_is_retrained_and_said(tmp_path, monkeypatch, capsys):
    """torch.load reads such a file without complaint (the zip stays valid); the stored sha256 catches it."""
    from checkpoint_files import flip_byte_in_a_tensor

    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=False)
    before = _read_rows(tmp_path)
    weights = {(s, t): _weights(tmp_path, s, t) for s in (0, 1) for t in range(3)}
    damaged = _ckpt(tmp_path, 1, 1)
    flip_byte_in_a_tensor(damaged)
    assert any(not torch.equal(weights[1, 1][k], v) for k, v in _weights(tmp_path, 1, 1).items())
    capsys.readouterr()
    with monkeypatch.context() as patch:
        trained = _count_training(patch)
        run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=False)
    err = capsys.readouterr().err
    assert f"checkpoint {damaged}: its weights do not match the sha256" in err
    assert "retraining seed 1 round 1" in err
    # only the damaged round is retrained: round 2 was trained from the same (re-created) teacher weights
    assert len(trained) == 1
    assert _read_rows(tmp_path) == before  # the numbers of an uninterrupted run
    for (s, t), reference in weights.items():
        assert all(torch.equal(reference[k], v) for k, v in _weights(tmp_path, s, t).items())


def test_a_foreign_checkpoint_is_retrained_and_said(tmp_path, monkeypatch, capsys):
    """A checkpoint of a run with another learning rate, copied into the folder, is not loaded."""
    import shutil

    run_experiment(config_from_dict(TINY), tmp_path / "a", plots=False, verbose=False)
    before = _read_rows(tmp_path / "a")
    other = {**TINY, "optimizer": {**TINY["optimizer"], "lr": 0.01}, "chain": {"rounds": 1, "seeds": [0]}}
    run_experiment(config_from_dict(other), tmp_path / "b", plots=False, verbose=False)
    target = _ckpt(tmp_path / "a", 0, 0)
    shutil.copy(_ckpt(tmp_path / "b", 0, 0), target)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        trained = _count_training(patch)
        run_experiment(config_from_dict(TINY), tmp_path / "a", plots=False, verbose=False)
    err = capsys.readouterr().err
    assert f"checkpoint {target}: was written by a run with different settings (optimizer.lr: 0.01 th" in err
    assert len(trained) == 1 and _read_rows(tmp_path / "a") == before


def test_a_fresh_run_never_says_resuming(tmp_path, capsys):
    """A folder with config.yaml and results but no checkpoints (e.g. committed results) is a fresh start."""
    import shutil

    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=True)
    assert "starting in" in capsys.readouterr().err
    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=True)
    assert "resuming from 6 of 6 round checkpoints" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "data_seed0" / "checkpoints")
    run_experiment(config_from_dict(TINY), tmp_path, plots=False, verbose=True)
    err = capsys.readouterr().err
    assert "starting in" in err and "resuming" not in err


TWO_DATA_SEEDS = {**TINY, "data": {"name": "digits", "subset": 150, "label_noise": 0.2, "seeds": [0, 3]},
                  "chain": {"rounds": 2, "seeds": 2}}  # fmt: skip


def test_two_data_seeds_resume_after_a_kill_to_the_same_rows(tmp_path, monkeypatch):
    """Data seeds and model seeds are separate axes: each (data seed, model seed) unit has its own
    checkpoints (data_seed{D}/checkpoints/seed{S}/); a kill in the second data seed's chains resumes to the
    numbers of an uninterrupted run."""
    reference = tmp_path / "reference"
    summary = run_experiment(config_from_dict(TWO_DATA_SEEDS), reference, plots=False, verbose=False)
    rows = _read_rows(reference)
    units = sorted({(r["data_seed"], r["seed"]) for r in rows})
    assert units == [("0", "0"), ("0", "1"), ("3", "0"), ("3", "1")]
    assert summary["seed_axes"]["data.seeds"] == [0, 3] and summary["seed_axes"]["chain.seeds"] == [0, 1]
    by_unit = {(r["data_seed"], r["seed"], r["round"]): r for r in rows}
    # the model seed draws the same initialization under both data seeds; the data differ
    assert by_unit["0", "1", "0"]["student_seed"] == by_unit["3", "1", "0"]["student_seed"]
    assert by_unit["0", "1", "0"]["train_acc_clean"] != by_unit["3", "1", "0"]["train_acc_clean"]

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:  # data seed 0: calls 0-3; data seed 3, model seed 0: calls 4-5
        _kill_in_training_call(patch, call_to_kill=5)
        with pytest.raises(SimulatedKill):
            run_experiment(config_from_dict(TWO_DATA_SEEDS), resumed, plots=False, verbose=False)
    assert _ckpt(resumed, 0, 0, data_seed=3).is_file() and not _ckpt(resumed, 0, 1, data_seed=3).exists()
    with monkeypatch.context() as patch:
        trained = _count_training(patch)
        run_experiment(config_from_dict(TWO_DATA_SEEDS), resumed, plots=False, verbose=False)
    assert len(trained) == 3  # data seed 3: model seed 0 round 1, model seed 1 rounds 0 and 1
    assert _read_rows(resumed) == rows


def test_a_checkpoint_of_another_data_seed_is_not_taken(tmp_path, monkeypatch, capsys):
    """The data seed is part of a chain's fingerprint: a round copied from data seed 0 into data seed 3's
    folder is retrained, and said."""
    import shutil

    config = {**TWO_DATA_SEEDS, "chain": {"rounds": 1, "seeds": [0]}}
    run_experiment(config_from_dict(config), tmp_path, plots=False, verbose=False)
    before = _read_rows(tmp_path)
    target = _ckpt(tmp_path, 0, 0, data_seed=3)
    shutil.copy(_ckpt(tmp_path, 0, 0, data_seed=0), target)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        trained = _count_training(patch)
        run_experiment(config_from_dict(config), tmp_path, plots=False, verbose=False)
    err = capsys.readouterr().err
    assert f"checkpoint {target}: was written by a run with different settings (data_seed" in err
    assert len(trained) == 1 and _read_rows(tmp_path) == before


def test_old_single_seed_configs_and_checkpoint_rows_stay_readable(tmp_path, capsys):
    """A config.yaml with the older data.seed resumes as data.seeds [seed]; checkpoints of the layout before
    data seeds (checkpoints/seed*/ at the top) are not used, and said; a checkpoint row with the older column
    name data_seed (the batch-order seed) is read as batch_seed."""
    import yaml

    from selfdistill.nn.checkpoint import read_verified_checkpoint, save_verified_checkpoint

    old = {**TINY, "data": {"name": "digits", "subset": 150, "seed": 0}, "chain": {"rounds": 1, "seeds": [0]}}
    config = config_from_dict(old)
    assert config.data.seeds == [0] and "seed" not in config.to_dict()["data"]
    run_experiment(config, tmp_path, plots=False, verbose=False)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    saved["data"].pop("seeds")
    saved["data"]["seed"] = 0  # as an older run wrote it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    path = _ckpt(tmp_path, 0, 0)
    read = read_verified_checkpoint(path)
    row = dict(read.payload["row"])
    row["data_seed"] = row.pop("batch_seed")  # the older column name
    meta = {k: read.payload[k] for k in ("seed", "round", "init_seed", "teacher_sha256")}
    save_verified_checkpoint(path, read.payload["state_dict"], settings=read.payload["settings"], row=row,
                             **meta)  # fmt: skip
    (tmp_path / "checkpoints" / "seed0").mkdir(parents=True)
    (tmp_path / "checkpoints" / "seed0" / "round0.pt").write_bytes(b"old layout")
    capsys.readouterr()
    run_experiment(config_from_dict(old), tmp_path, plots=False, verbose=True)
    err = capsys.readouterr().err
    assert "resuming from 1 of 1" in err and "layout before data seeds" in err
    assert _read_rows(tmp_path)[0]["batch_seed"] == str(row["data_seed"])
