"""The distill command's PTLoss wiring: the search scores the proxy of the loss the students train with,
eps = 0 is KD at every T, and a run over several data seeds reports what it measured (checked
independently)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from selfdistill.cli import main as cli_main
from selfdistill.experiments.config import distill_config_from_dict, read_yaml, resolve_config_path
from selfdistill.experiments.distill import (
    candidate_roles,
    method_plan,
    ptloss_method,
    ptloss_rows,
    stage_search,
)

BASE = read_yaml(resolve_config_path("distill_digits"))


class _Fake:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _config(**changes):
    raw = {**BASE, "search": {**BASE["search"], "n_candidates": 4, "M": 3}, "candidate_students": 2}
    for key, value in changes.items():
        section, name = key.split("__")
        raw[section] = {**raw[section], name: value}
    return distill_config_from_dict(raw)


def _teacher(n=10, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    return torch.softmax(logits, -1), torch.randint(0, c, (n,), generator=g)


def _search(config, tmp_path, seed=0):
    probs, labels = _teacher(seed=seed)
    return (
        stage_search(config, _Fake(val_probs=probs), _Fake(y_val=labels), tmp_path, plots=False),
        probs,
        labels,
    )


def _argmin_of(loss, target, temperature):
    """scipy BFGS over the student's logits of the loss module the student trains with (one example);
    returns the student's softened distribution softmax(z* / T), the proxy in the search's default space."""
    from scipy.optimize import minimize

    p = target[None]

    def value_and_grad(z):
        z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        out = loss(z[None], p)
        out.backward()
        return float(out.detach()), z.grad.numpy()

    start = torch.log(target.clamp_min(1e-300)).numpy() * temperature
    best = minimize(value_and_grad, start, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
    r = np.exp(best.x / temperature - (best.x / temperature).max())
    return r / r.sum()


def test_the_distill_command_passes_temperature_and_form_through(tmp_path):
    """Every PTLoss student is built from the (eps, T) of its search row and the configured form, and the
    search scored exactly that loss: its proxy teacher is the minimiser of the student's loss module."""
    config = _config(ptloss__temperature=[1.0, 4.0], ptloss__form="truncated")
    search, _, _ = _search(config, tmp_path)
    assert search.temperatures == (1.0, 4.0) and search.form == "truncated"
    plan = {m.name: m for m in method_plan(config, search)}
    rows = ptloss_rows(config, search)
    assert {name for name, _, _ in rows} == {"ptloss_random", "ptloss_selected", "ptloss_T1", "ptloss_T4"}
    for name, row, _ in rows:
        ptloss = plan[name].loss.ptloss
        assert ptloss.form == "truncated" and ptloss.temperature == search.table["temperature"][row]
        assert torch.equal(
            ptloss.epsilon.to(search.epsilons.dtype), search.epsilon(row).reshape(ptloss.epsilon.shape)
        )
    assert rows[1][1] == search.best_index  # ptloss_selected is the selected row

    config = _config(ptloss__temperature=[1.0, 4.0], ptloss__form="full")
    search, probs, labels = _search(config, tmp_path, seed=1)
    onehot = np.eye(probs.shape[1])[labels.numpy()]
    for name, row, _ in ptloss_rows(config, search):
        method = ptloss_method(search, row, name, "")
        temperature = float(search.table["temperature"][row])
        argmins = np.array([_argmin_of(method.loss, p, temperature) for p in probs])
        brier = np.mean(np.sum((argmins - onehot) ** 2, axis=1))
        assert search.table["brier"][row] == pytest.approx(brier, abs=2e-5), name


def test_eps_zero_rows_of_the_method_table_are_kd_at_every_temperature(tmp_path):
    """The eps = 0 rows the run trains (the validation-accuracy selection starts from them) build exactly
    temperature KD, on sharp teachers with probabilities far below 1e-12 too; both equal T^2 KL written
    out."""
    from selfdistill.nn.methods import build_method

    grid = [1.0, 2.0, 4.0, 8.0]
    config = _config(ptloss__temperature=grid, methods__ptloss_val_selected=True)
    search, _, _ = _search(config, tmp_path)
    roles = candidate_roles(config, search)
    g = torch.Generator().manual_seed(3)
    teacher_logits = torch.randn(6, 4, generator=g, dtype=torch.float64) * 30  # many p < 1e-12
    targets = torch.softmax(teacher_logits, -1)
    assert (targets < 1e-12).float().mean() > 0.2
    student = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for t in grid:
        row = search.row(0, t)
        assert "val_selection" in roles[row]
        ptloss = ptloss_method(search, row, "eps0", "")
        kd = build_method("kd", temperature=t)
        q = torch.softmax(teacher_logits / t, -1).numpy()  # the teacher softened, from its logits
        log_s = torch.log_softmax(student / t, -1).numpy()
        expected = t**2 * np.mean(np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - log_s), 0), 1))
        assert float(ptloss.loss(student, ptloss.targets(targets))) == pytest.approx(expected, rel=1e-9)
        assert float(kd.loss(student, kd.targets(targets))) == pytest.approx(expected, rel=1e-9)


TINY = [
    "--set",
    "teacher.optimizer.steps=80",
    "--set",
    "student.optimizer.steps=25",
    "--set",
    "seeds=2",
    "--set",
    "data.seeds=[0, 4]",
    "--set",
    "data.label_noise=0.3",
    "--set",
    "methods.temperatures=[4.0]",
    "--set",
    "methods.label_smoothing=[]",
    "--set",
    "ptloss.temperature=[1.0, 4.0]",
    "--set",
    "methods.ptloss_val_selected=true",
    "--set",
    "val_selection.candidates=1",
    "--set",
    "search.n_candidates=4",
    "--set",
    "candidate_students=2",
]


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_run_over_two_data_seeds_reports_teachers_selections_and_candidates(tmp_path, capsys):
    from selfdistill.experiments.distill import teacher_folder

    out = tmp_path / "run"
    assert cli_main(["distill", "distill_digits", "--out", str(out), "--no-plots", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "on the noisy labels it was trained on (30% flipped)" in printed and "wall time" in printed
    assert "ptloss_T4 - kd_T4" in printed and "ptloss_val_selected - ptloss_selected" in printed
    summary = json.loads((out / "results.json").read_text())
    assert summary["wall_seconds"] > 0 and summary["seed_axes"]["data.seeds"] == [0, 4]

    # teacher diagnostics, recomputed from the saved teachers
    config = distill_config_from_dict(read_yaml(out / "config.yaml"))
    teachers = {int(r["data_seed"]): r for r in _csv(out / "teachers.csv")}
    assert sorted(teachers) == [0, 4]
    for d in (0, 4):
        data = config.data.load(d)
        model = config.teacher.model.factory(data)()
        model.load_state_dict(
            torch.load(teacher_folder(out, d, 0) / "teacher.pt", weights_only=True)["model"]
        )
        with torch.no_grad():
            train_pred = model.eval()(data.x_train).argmax(1)
            val_probs = torch.softmax(model(data.x_val).double(), -1).numpy()
        onehot = np.eye(10)[data.y_val.numpy()]
        row = teachers[d]
        assert float(row["train_accuracy"]) == pytest.approx(
            (train_pred == data.y_train).double().mean().item()
        )
        clean = (train_pred == data.clean_y_train).double().mean().item()
        assert float(row["train_accuracy_clean"]) == pytest.approx(clean)
        assert float(row["val_brier"]) == pytest.approx(
            np.mean(np.sum((val_probs - onehot) ** 2, 1)), rel=1e-6
        )
        assert int(row["ece_bins"]) == 15

    # the validation-accuracy selection: the val_selection row whose students have the best mean validation
    # accuracy; its students' test accuracies are the method's rows
    candidates = _csv(out / "candidate_runs.csv")
    runs = _csv(out / "runs.csv")
    roles = {(int(r["data_seed"]), int(r["row"])): r["role"] for r in _csv(out / "candidates.csv")}
    for d in (0, 4):
        pool = sorted(row for (dd, row), role in roles.items() if dd == d and "val_selection" in role)
        assert len(pool) == 4  # eps = 0 and one random candidate, at T = 1 and T = 4

        def mean_val(row, d=d):
            return np.mean(
                [
                    float(r["val_accuracy"])
                    for r in candidates
                    if (int(r["data_seed"]), int(r["row"])) == (d, row)
                ]
            )

        best = max(pool, key=mean_val)
        expected = sorted(
            float(r["test_accuracy"]) for r in candidates if (int(r["data_seed"]), int(r["row"])) == (d, best)
        )
        got = sorted(
            float(r["test_accuracy"])
            for r in runs
            if r["method"] == "ptloss_val_selected" and int(r["data_seed"]) == d
        )
        assert got == expected
        # candidate students: every seed, the selected row among them
        selected = [
            c for c in _csv(out / "candidates.csv") if int(c["data_seed"]) == d and "selected" in c["role"]
        ]
        assert len(selected) == 1 and int(selected[0]["n_seeds"]) == 2
    methods = {r["method"] for r in _csv(out / "results.csv")}
    assert {"kl", "kd_T4", "ptloss_random", "ptloss_selected", "ptloss_T1", "ptloss_T4"} <= methods
    assert "ptloss_val_selected" in methods
