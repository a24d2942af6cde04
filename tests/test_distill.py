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
