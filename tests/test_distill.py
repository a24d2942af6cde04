"""The distill workflow (teacher -> students with PTLoss and baselines) at a tiny scale on digits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from selfdistill.cli import main as cli_main
from selfdistill.experiments.config import read_yaml, resolve_config_path
from selfdistill.experiments.distill import parse_config
from selfdistill.io import atomic_write_verified_json, read_verified_json

BASE = read_yaml(resolve_config_path("distill_digits"))  # a complete config; tests replace sections


T0 = "teachers/data0_teacher0"  # the folder of the one teacher of a run with one data and one teacher seed


def _config(**sections):
    return {**BASE, **sections}


def _runs(path):
    content, problem = read_verified_json(path)
    assert problem is None
    return content["rows"]

TINY = [
    "--set", "teacher.optimizer.steps=150",
    "--set", "student.optimizer.steps=40",
    "--set", "seeds=2",
    "--set", "methods.temperatures=[4.0]",
    "--set", "search.n_candidates=6",
    "--set", "candidate_students=2",
]  # fmt: skip

METHODS = ["kl", "kd_T4", "ls_0.1", "ptloss_random", "ptloss_selected"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "run"
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY]) == 0
    return out


def test_run_writes_every_table(finished_run):
    out = finished_run
    for name in ("teacher.pt", "search.csv", "search.json", "runs.json"):
        assert (out / T0 / name).is_file(), name
    for name in ("runs.csv", "results.csv", "results.json", "paired.csv", "teachers.csv"):
        assert (out / name).is_file(), name
    assert (out / "config.yaml").is_file() and not (out / "config.json").exists()  # one resume snapshot
    results = _rows(out / "results.csv")
    assert [r["method"] for r in results] == METHODS
    assert all(int(r["n_seeds"]) == 2 for r in results)
    runs = _rows(out / "runs.csv")
    assert sorted((r["method"], int(r["seed"])) for r in runs) == sorted(
        (m, s) for m in METHODS for s in (0, 1)
    )
    for r in results:  # mean and std over seeds recomputed from the per-run table
        accs = [float(x["test_accuracy"]) for x in runs if x["method"] == r["method"]]
        assert float(r["test_accuracy_mean"]) == pytest.approx(sum(accs) / 2)
        assert float(r["test_accuracy_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    summary = json.loads((out / "results.json").read_text())
    search = json.loads((out / T0 / "search.json").read_text())
    assert summary["teachers"][0]["selected_candidate"] == search["best_candidate"]
    assert summary["teachers"][0]["test_accuracy"] > 0.8
    assert min(float(r["test_accuracy_mean"]) for r in results) > 0.5  # students learned from the teacher
    candidates = summary["candidate_students"]
    assert 0 in {c["candidate"] for c in candidates}  # the plain teacher is always among them
    assert (out / "candidates.csv").is_file()


def test_interrupted_run_resumes_to_the_same_result(finished_run, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(finished_run, out)
    complete = _runs(out / T0 / "runs.json")
    content, _ = read_verified_json(out / T0 / "runs.json")
    atomic_write_verified_json(out / T0 / "runs.json", {**content, "rows": complete[:3]})  # killed after 3
    (out / "results.csv").unlink()
    teacher_mtime = (out / T0 / "teacher.pt").stat().st_mtime_ns
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY]) == 0
    resumed = _runs(out / T0 / "runs.json")
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [(key(r), r["test_accuracy"], r["val_accuracy"]) for r in sorted(resumed, key=key)] == [
        (key(r), r["test_accuracy"], r["val_accuracy"]) for r in sorted(complete, key=key)
    ]
    assert (out / T0 / "teacher.pt").stat().st_mtime_ns == teacher_mtime  # the teacher was not retrained


def test_changed_config_in_same_folder_is_refused(finished_run, capsys):
    changed = [*TINY, "--set", "student.optimizer.lr=0.01"]
    code = cli_main(["distill", "distill_digits", "--out", str(finished_run), "--no-plots", *changed])
    assert code == 2
    err = capsys.readouterr().err
    assert "different config" in err and "student.optimizer.lr: 0.003 in the folder, 0.01 now" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"studnet": {}}, "unknown key 'studnet'"),
        ({"seeds": 0}, "seeds"),
        ({"methods": {"temperatures": [0.0]}}, "methods.temperatures"),
        ({"search": {"n_candidates": 1}}, "search.n_candidates"),
        (
            {"student": {"optimizer": {"learning_rate": 0.1}}},
            "student.optimizer: unknown key .learning_rate.; allowed keys: name, lr",
        ),
        ({"candidate_students": 300}, "candidate_students"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_config_raises_clear_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_config(_config(**raw))


def test_module_does_not_import_torch():
    code = "import sys, selfdistill.experiments.distill; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---- transfer set -----------------------------------------------------------------------------------


def test_transfer_split_is_disjoint_seeded_and_sized():
    import numpy as np

    from selfdistill.experiments.distill import transfer_split

    teacher, transfer = transfer_split(101, 0.3, seed=4)
    assert len(transfer) == 30 and len(teacher) == 71
    assert np.array_equal(np.sort(np.concatenate([teacher, transfer])), np.arange(101))
    again = transfer_split(101, 0.3, seed=4)
    assert np.array_equal(again[1], transfer) and not np.array_equal(transfer_split(101, 0.3, 5)[1], transfer)
    with pytest.raises(ValueError, match=r"transfer.fraction=0.001 of 101 .* leaves 0 for the transfer set"):
        transfer_split(101, 0.001, seed=0)


def test_held_out_and_file_transfer_sets(tmp_path):
    import numpy as np
    import torch

    from selfdistill.experiments.distill import transfer_split
    from selfdistill.nn.data import load_data

    tiny = TINY[:6] + ["--set", "methods.temperatures=[]", "--set", "methods.label_smoothing=[]",
                       "--set", "search.n_candidates=3", "--set", "candidate_students=0"]  # fmt: skip
    out = tmp_path / "held"
    args = ["distill", "distill_digits", "--out", str(out), "--no-plots", *tiny]
    assert cli_main([*args, "--set", "transfer.source=held_out", "--set", "transfer.fraction=0.25"]) == 0
    data = load_data("digits", val_fraction=0.2, seed=0)
    teacher_idx, transfer_idx = transfer_split(data.num_train, 0.25, seed=0)
    transfer = json.loads((out / "results.json").read_text())["teachers"][0]["transfer"]
    assert transfer["size"] == len(transfer_idx) and transfer["teacher_train_size"] == len(teacher_idx)
    # the reported teacher accuracy on the transfer set, recomputed from the saved teacher
    teacher = parse_config(BASE).teacher.model.factory(data)()
    teacher.load_state_dict(torch.load(out / T0 / "teacher.pt", weights_only=True)["model"])
    with torch.no_grad():
        predicted = teacher.eval()(data.x_train[torch.as_tensor(transfer_idx)]).argmax(1)
    expected = (predicted == data.y_train[torch.as_tensor(transfer_idx)]).float().mean().item()
    assert transfer["teacher_accuracy"] == pytest.approx(expected, abs=1e-6)

    np.save(tmp_path / "x.npy", data.x_test[:40].numpy())
    out = tmp_path / "file"
    args = ["distill", "distill_digits", "--out", str(out), "--no-plots", *tiny]
    file_args = ["--set", "transfer.source=file", "--set", f"transfer.path={tmp_path / 'x.npy'}"]
    assert cli_main([*args, *file_args]) == 0
    transfer = json.loads((out / "results.json").read_text())["teachers"][0]["transfer"]
    assert transfer == {"source": "file", "size": 40, "teacher_train_size": data.num_train}


@pytest.mark.parametrize(
    ("transfer", "message"),
    [
        ({"source": "unlabeled"}, "transfer.source: 'unlabeled' is not allowed; allowed values: train, held"),
        ({"source": "held_out", "fraction": 1.0}, r"transfer.fraction must be in \(0, 1\)"),
        ({"source": "file"}, "transfer.path: source 'file' needs the path"),
        ({"path": "x.npy"}, "transfer.path is only read with transfer.source: file"),
    ],
)
def test_bad_transfer_settings(transfer, message):
    with pytest.raises(ValueError, match=message):
        parse_config(_config(transfer=transfer))


def test_bad_transfer_files_name_the_problem(tmp_path):
    import numpy as np

    from selfdistill.experiments.distill import load_transfer_inputs

    with pytest.raises(FileNotFoundError, match="transfer.path: .* does not exist"):
        load_transfer_inputs(tmp_path / "none.npy", (1, 8, 8))
    np.save(tmp_path / "flat.npy", np.zeros((5, 64)))
    with pytest.raises(ValueError, match=r"shape \(5, 64\); expected \(N, 1, 8, 8\)"):
        load_transfer_inputs(tmp_path / "flat.npy", (1, 8, 8))
    bad = np.zeros((12, 1, 8, 8))
    bad[1, 0, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_transfer_inputs(tmp_path / "nan.npy", (1, 8, 8))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 1, 8, 8)), b=np.zeros(2))
    with pytest.raises(ValueError, match="name the inputs 'x'"):
        load_transfer_inputs(tmp_path / "two.npz", (1, 8, 8))
    np.savez(tmp_path / "ok.npz", x=np.ones((12, 1, 8, 8)), y=np.zeros(12))
    assert load_transfer_inputs(tmp_path / "ok.npz", (1, 8, 8)).shape == (12, 1, 8, 8)
    np.save(tmp_path / "few.npy", np.zeros((4, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"holds 4 inputs, fewer than 10"):
        load_transfer_inputs(tmp_path / "few.npy", (1, 8, 8))


def test_transfer_files_that_are_not_arrays_get_one_line(tmp_path):
    from selfdistill.experiments.distill import load_transfer_inputs

    for name in ("text.npy", "text.pt", "text.npz"):
        (tmp_path / name).write_text("pixel,pixel\n0,16\n")
        with pytest.raises(ValueError, match=r"is not a NumPy \(.npy/.npz\) or torch \(.pt\) file") as info:
            load_transfer_inputs(tmp_path / name, (1, 8, 8))
        assert "\n" not in str(info.value) and str(tmp_path / name) in str(info.value)
    (tmp_path / "x.csv").write_text("0,16\n")
    with pytest.raises(ValueError, match=r"x.csv is not a .npy, .npz or .pt file; save the inputs"):
        load_transfer_inputs(tmp_path / "x.csv", (1, 8, 8))


def test_unpreprocessed_transfer_inputs_are_warned_about(tmp_path):
    """Raw 0-16 pixels where the teacher saw standardized ones: warned, naming the path and what differs;
    inputs preprocessed like the training inputs (the test split) pass silently."""
    import warnings

    import numpy as np
    from sklearn.datasets import load_digits

    from selfdistill.experiments.distill import transfer_set

    raw = load_digits().images[:200, None].astype(np.float32)  # values 0..16
    np.save(tmp_path / "raw.npy", raw)
    config = parse_config(_config(transfer={"source": "file", "path": str(tmp_path / "raw.npy")}))
    data = config.data.load()
    with pytest.warns(UserWarning, match=r"transfer.path: the inputs of .*raw.npy do not look prepro") as w:
        transfer_set(config, data)
    message = str(w[0].message)
    assert "mean" in message and "range" in message
    np.save(tmp_path / "ok.npy", data.x_test.numpy())
    config = parse_config(_config(transfer={"source": "file", "path": str(tmp_path / "ok.npy")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert transfer_set(config, data).x.shape[0] == data.num_test


def test_splits_leaving_too_few_training_examples_name_the_key(tmp_path, capsys):
    args = ["distill", "distill_digits", "--no-plots", *TINY]
    held = ["--set", "transfer.source=held_out", "--set", "transfer.fraction=0.995"]
    assert cli_main([*args, "--out", str(tmp_path / "a"), *held]) == 2
    err = capsys.readouterr().err
    assert "transfer.fraction=0.995 of 1149 training examples leaves 1143 for the transfer set and 6" in err
    assert "at least 10" in err and len(err.strip().splitlines()) == 1
    assert cli_main([*args, "--out", str(tmp_path / "b"), "--set", "data.val_fraction=0.995"]) == 2
    err = capsys.readouterr().err
    assert "data.val_fraction=0.995 leaves 7 training examples, fewer than 10" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before --out


def test_a_damaged_teacher_is_retrained_and_said_and_its_students_are_kept(finished_run, tmp_path, capsys):
    """teacher.pt with a flipped byte in its weights (torch.load reads it without complaint) is retrained;
    the retrained teacher has the same weights, so the finished students (matched by the teacher's sha256)
    are kept. More seeds extend the run: only the new seed's students are trained."""
    import shutil

    from checkpoint_files import flip_byte_in_a_tensor

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = _runs(out / T0 / "runs.json")
    flip_byte_in_a_tensor(out / T0 / "teacher.pt")
    capsys.readouterr()
    more = [item.replace("seeds=2", "seeds=3") for item in TINY]
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *more]) == 0
    err = capsys.readouterr().err
    assert f"teacher {out / T0 / 'teacher.pt'}: its weights do not match the sha256" in err
    assert "retraining the teacher" in err and "recomputing" not in err
    after = _runs(out / T0 / "runs.json")
    assert after[: len(before)] == before and sorted({r["seed"] for r in after[len(before) :]}) == [2]


def test_per_run_results_edited_behind_their_hash_are_recomputed_and_said(finished_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    reference = (out / "results.csv").read_text()
    saved = json.loads((out / T0 / "runs.json").read_text())
    saved["rows"][0]["test_accuracy"] = 0.123  # a silently different number
    (out / T0 / "runs.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY]) == 0
    err = capsys.readouterr().err
    assert f"{out / T0 / 'runs.json'}: its content does not match the sha256" in err and "recomputing" in err
    assert (out / "results.csv").read_text() == reference


def test_a_given_teacher_checkpoint_that_fails_its_hash_is_an_error(finished_run, tmp_path, capsys):
    import shutil

    from checkpoint_files import flip_byte_in_a_tensor

    given = tmp_path / "teacher.pt"
    shutil.copy(finished_run / T0 / "teacher.pt", given)
    flip_byte_in_a_tensor(given)
    out = tmp_path / "run"
    code = cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY,
                     "--set", f"teacher.checkpoint={given}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"teacher.checkpoint: {given} its weights do not match the sha256" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
