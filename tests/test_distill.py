"""The distill workflow (teacher -> students with PTLoss and baselines) at a tiny scale on digits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from selfdistill.cli import main as cli_main
from selfdistill.experiments.distill import load_json, parse_config

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
    for name in ("teacher.pt", "search.csv", "search.json", "runs.csv", "results.csv", "results.json"):
        assert (out / name).is_file(), name
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
    search = json.loads((out / "search.json").read_text())
    assert summary["search"]["best_index"] == search["best_index"]
    assert summary["teacher"]["test_accuracy"] > 0.8
    assert min(float(r["test_accuracy_mean"]) for r in results) > 0.5  # students learned from the teacher
    candidates = summary["candidate_students"]
    assert 0 in {c["candidate"] for c in candidates}  # the plain teacher is always among them
    assert (out / "candidates.csv").is_file()


def test_interrupted_run_resumes_to_the_same_result(finished_run, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(finished_run, out)
    complete = load_json(out / "runs.json")
    (out / "runs.json").write_text(json.dumps(complete[:3]))  # as if killed after three students
    (out / "results.csv").unlink()
    teacher_mtime = (out / "teacher.pt").stat().st_mtime_ns
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY]) == 0
    resumed = load_json(out / "runs.json")
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [(key(r), r["test_accuracy"], r["val_accuracy"]) for r in sorted(resumed, key=key)] == [
        (key(r), r["test_accuracy"], r["val_accuracy"]) for r in sorted(complete, key=key)
    ]
    assert (out / "teacher.pt").stat().st_mtime_ns == teacher_mtime  # the teacher was not retrained


def test_changed_config_in_same_folder_is_refused(finished_run, capsys):
    changed = [item.replace("seeds=2", "seeds=3") for item in TINY]
    code = cli_main(["distill", "distill_digits", "--out", str(finished_run), "--no-plots", *changed])
    assert code == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"studnet": {}}, "studnet: unknown key"),
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
        parse_config(raw)


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
    transfer = json.loads((out / "results.json").read_text())["transfer"]
    assert transfer["size"] == len(transfer_idx) and transfer["teacher_train_size"] == len(teacher_idx)
    # the reported teacher accuracy on the transfer set, recomputed from the saved teacher
    from selfdistill.experiments.distill import _model_factory, parse_config

    config = parse_config({"teacher": {"model": {"name": "mlp", "hidden_sizes": [256, 256]}}})
    teacher = _model_factory(config["teacher"]["model"], data)()
    teacher.load_state_dict(torch.load(out / "teacher.pt", weights_only=True)["model"])
    with torch.no_grad():
        predicted = teacher.eval()(data.x_train[torch.as_tensor(transfer_idx)]).argmax(1)
    expected = (predicted == data.y_train[torch.as_tensor(transfer_idx)]).float().mean().item()
    assert transfer["teacher_accuracy"] == pytest.approx(expected, abs=1e-6)

    np.save(tmp_path / "x.npy", data.x_test[:40].numpy())
    out = tmp_path / "file"
    args = ["distill", "distill_digits", "--out", str(out), "--no-plots", *tiny]
    file_args = ["--set", "transfer.source=file", "--set", f"transfer.path={tmp_path / 'x.npy'}"]
    assert cli_main([*args, *file_args]) == 0
    transfer = json.loads((out / "results.json").read_text())["transfer"]
    assert transfer == {"source": "file", "size": 40, "teacher_train_size": data.num_train}


@pytest.mark.parametrize(
    ("transfer", "message"),
    [
        ({"source": "unlabeled"}, "transfer.source: expected one of train, held_out, file"),
        ({"source": "held_out", "fraction": 1.0}, r"transfer.fraction: expected a number in \(0, 1\)"),
        ({"source": "file"}, "transfer.path: source 'file' needs the path"),
        ({"path": "x.npy"}, "transfer.path is only read with transfer.source: file"),
    ],
)
def test_bad_transfer_settings(transfer, message):
    with pytest.raises(ValueError, match=message):
        parse_config({"transfer": transfer})


def test_bad_transfer_files_name_the_problem(tmp_path):
    import numpy as np

    from selfdistill.experiments.distill import load_transfer_inputs

    with pytest.raises(FileNotFoundError, match="transfer.path: .* does not exist"):
        load_transfer_inputs(tmp_path / "none.npy", (1, 8, 8))
    np.save(tmp_path / "flat.npy", np.zeros((5, 64)))
    with pytest.raises(ValueError, match=r"shape \(5, 64\); expected \(N, 1, 8, 8\)"):
        load_transfer_inputs(tmp_path / "flat.npy", (1, 8, 8))
    bad = np.zeros((3, 1, 8, 8))
    bad[1, 0, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_transfer_inputs(tmp_path / "nan.npy", (1, 8, 8))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 1, 8, 8)), b=np.zeros(2))
    with pytest.raises(ValueError, match="name the inputs 'x'"):
        load_transfer_inputs(tmp_path / "two.npz", (1, 8, 8))
    np.savez(tmp_path / "ok.npz", x=np.ones((2, 1, 8, 8)), y=np.zeros(2))
    assert load_transfer_inputs(tmp_path / "ok.npz", (1, 8, 8)).shape == (2, 1, 8, 8)
