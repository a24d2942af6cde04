"""Perturbation search: candidates, scores recomputed independently, selection, result object, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfdistill.ptloss import PerturbationSearchResult, proxy_teacher, sample_candidates, select_perturbation


@pytest.fixture(scope="module")
def overconfident():
    """True probabilities p* = softmax(z); labels drawn from p*; the teacher softmax(3 z) is overconfident."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1500, 8, generator=g, dtype=torch.float64) * 1.5
    labels = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return torch.softmax(3 * z, -1), labels


@pytest.fixture(scope="module")
def result(overconfident):
    teacher, labels = overconfident
    return select_perturbation(teacher, labels, M=5, n_candidates=30, seed=0)


def test_candidates_are_seeded_and_start_with_zero():
    a = sample_candidates(6, 4, 10, seed=3)
    assert a.shape == (10, 6, 4) and torch.all(a[0] == 0)
    assert torch.equal(a, sample_candidates(6, 4, 10, seed=3))
    assert not torch.equal(a, sample_candidates(6, 4, 10, seed=4))
    # default: relative, eps_m = delta / m with delta ~ uniform(-0.9, 0.9)
    delta = a * torch.arange(1, 5)
    assert float(delta.abs().max()) <= 0.9 and float(delta[1:].abs().max()) > 0.8
    uniform = sample_candidates(6, 4, 10, distribution="uniform", scale=0.25)
    assert float(uniform.abs().max()) <= 0.25 and float(uniform[1:, :, 3].abs().max()) > 0.2
    shared = sample_candidates(6, 4, 10, class_wise=False, distribution="normal", scale=0.1)
    assert shared.shape == (10, 1, 4)
    assert sample_candidates(6, 4, 5, include_zero=False).abs().amin(dim=(1, 2)).gt(0).all()


def test_scores_match_an_independent_computation(overconfident, result):
    teacher, labels = overconfident
    onehot = np.eye(8)[labels.numpy()]
    for index in (0, result.best_index, 7):
        proxy = proxy_teacher(teacher, result.epsilons[index].double()).numpy()  # float64 solve
        brier = np.mean(np.sum((proxy - onehot) ** 2, axis=1))
        tv = np.mean(0.5 * np.sum(np.abs(proxy - onehot), axis=1))
        nll = np.mean(-np.log(proxy[np.arange(len(labels)), labels.numpy()]))
        accuracy = np.mean(proxy.argmax(1) == labels.numpy())
        shift = np.mean(0.5 * np.sum(np.abs(proxy - teacher.numpy()), axis=1))
        assert abs(result.table["brier"][index] - brier) < 1e-5
        assert abs(result.table["tv"][index] - tv) < 1e-5
        assert abs(result.table["nll"][index] - nll) < 1e-4
        assert abs(result.table["accuracy"][index] - accuracy) < 1e-9
        assert abs(result.table["shift_tv"][index] - shift) < 1e-5
    assert result.table["shift_tv"][0] < 1e-6  # candidate 0 is the plain teacher


def test_selects_the_lowest_score_and_improves_on_an_overconfident_teacher(result):
    assert result.best_index == int(np.argmin(result.table["brier"]))
    assert result.best_score == pytest.approx(result.table["brier"].min())
    assert result.baseline_score - result.best_score > 1e-3  # softening an overconfident teacher helps
    assert result.best_epsilon.shape == (8, 5)
    assert np.all(result.table["converged_fraction"] == 1.0)
    assert np.all(result.table["convexity_margin"] > 0)


def test_other_criteria_and_given_candidates(overconfident, result):
    teacher, labels = overconfident
    tv = select_perturbation(teacher, labels, candidates=result.epsilons, criterion="tv")
    assert tv.best_index == int(np.argmin(result.table["tv"]))
    np.testing.assert_allclose(tv.table["brier"], result.table["brier"], atol=1e-6)
    shared = select_perturbation(teacher, labels, M=3, n_candidates=5, class_wise=False, dtype=torch.float64)
    assert shared.best_epsilon.shape == (3,)


def test_blocks_do_not_change_the_table(overconfident, result):
    teacher, labels = overconfident
    small = select_perturbation(teacher, labels, candidates=result.epsilons, max_elements=1000)
    for key in ("brier", "tv", "nll", "shift_tv"):
        np.testing.assert_allclose(small.table[key], result.table[key], atol=1e-6)


def test_result_prints_saves_and_plots(result, tmp_path):
    text = str(result)
    assert "selected candidate" in text and "eps = 0 at T = 1" in text and "not converged" in text
    rows = PerturbationSearchResult.read_csv(result.to_csv(tmp_path / "table.csv"))
    assert len(rows) == 30 and rows[result.best_index]["brier"] == pytest.approx(result.best_score)
    assert {"temperature", "convex", "converged", "eligible", "eps_shift_tv"} <= set(rows[0])
    data = json.loads((result.to_json(tmp_path / "search.json")).read_text())
    assert data["best_index"] == result.best_index and len(data["epsilons"]) == 30
    assert np.allclose(data["best_epsilon"], result.best_epsilon.numpy())
    result.plot(path=tmp_path / "scores.png")
    assert (tmp_path / "scores.png").stat().st_size > 1000


def test_bad_input_raises_clear_errors(overconfident):
    teacher, labels = overconfident
    with pytest.raises(ValueError, match=r"labels_val must lie in \[0, 7\]"):
        select_perturbation(teacher, labels + 1, n_candidates=2)
    with pytest.raises(ValueError, match="labels_val must be a 1-D array of 1500"):
        select_perturbation(teacher, labels[:-1], n_candidates=2)
    with pytest.raises(ValueError, match="teacher_probs_val rows must sum to 1"):
        select_perturbation(teacher * 0.9, labels, n_candidates=2)
    bad = teacher.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="teacher_probs_val contains NaN"):
        select_perturbation(bad, labels, n_candidates=2)
    with pytest.raises(ValueError, match="candidates has 5 rows but the distributions have 8 classes"):
        select_perturbation(teacher, labels, candidates=torch.zeros(3, 5, 2))
    with pytest.raises(ValueError, match="criterion"):
        select_perturbation(teacher, labels, criterion="auc")
    with pytest.raises(ValueError, match="M .* must be a positive integer"):
        select_perturbation(teacher, labels, M=0)
    with pytest.raises(ValueError, match="distribution"):
        select_perturbation(teacher, labels, distribution="cauchy")


def test_numpy_integers_count_as_integers(overconfident):
    teacher, labels = overconfident
    plain = select_perturbation(teacher[:50], labels[:50], M=2, n_candidates=4, scale=0.25)
    numpy = select_perturbation(
        teacher[:50], labels[:50], M=np.int64(2), n_candidates=np.int32(4), scale=np.float32(0.25)
    )
    assert torch.equal(plain.epsilons, numpy.epsilons) and plain.best_index == numpy.best_index
    with pytest.raises(ValueError, match="n_candidates must be a positive integer"):
        sample_candidates(3, 2, True)  # a bool is not a count


def test_repr_is_one_short_line(result):
    text = repr(result)
    assert "\n" not in text and len(text) < 200
    assert f"best_index={result.best_index}" in text and "n_candidates=30" in text


def _trained_loss(z, t, eps, temperature, form):
    """The loss the student trains with, T^2 L_form(softmax(t / T), softmax(z / T)), written from the spec."""
    q = np.exp(t / temperature - (t / temperature).max())
    q /= q.sum()
    a = z / temperature
    log_r = a - a.max()
    log_r -= np.log(np.exp(log_r).sum())
    u = 1 - np.exp(log_r)
    orders = np.arange(1, eps.shape[1] + 1)
    coefficients = eps + (1.0 / orders if form == "truncated" else 0.0)
    series = sum(coefficients[:, m] * u ** (m + 1) for m in range(eps.shape[1]))
    kl_part = -np.sum(q * log_r) if form == "full" else 0.0
    return temperature**2 * (np.sum(q * np.log(q)) + kl_part + np.sum(q * series))


def _argmin_of_trained_loss(t, eps, temperature, form):
    """scipy BFGS over the student's logits (two starts); returns softmax(z* / T), the student's target.

    The truncated form's minimiser can put zero mass on a class (logits -> -inf, which BFGS approaches only
    slowly), so there the BFGS point is polished by SLSQP over the closed simplex, on the same loss."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    best = None
    for start in range(2):
        z0 = t + (rng.normal(size=t.shape) * 2 if start else 0.0)
        res = minimize(_trained_loss, z0, args=(t, eps, temperature, form), method="BFGS",
                       options={"gtol": 1e-10, "maxiter": 20000})  # fmt: skip
        best = res if best is None or res.fun < best.fun else best
    r = np.exp(best.x / temperature - (best.x / temperature).max())
    r /= r.sum()
    if form == "truncated":

        def in_simplex(x):  # the same loss with the student's softened distribution r as the variable
            return _trained_loss(temperature * np.log(np.maximum(x, 1e-300)), t, eps, temperature, form)

        polished = minimize(in_simplex, r, method="SLSQP", bounds=[(0.0, 1.0)] * len(r),
                            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
                            options={"ftol": 1e-15, "maxiter": 500})  # fmt: skip
        assert polished.fun <= best.fun + 1e-12
        r = np.maximum(polished.x, 0.0) / np.maximum(polished.x, 0.0).sum()
    return r


@pytest.mark.parametrize("form", ["full", "truncated"])
def test_search_scores_the_argmin_of_the_loss_trained_at_t4(form):
    """Issue 12.5: the proxy scored at (T, form) is the minimiser of the loss trained at (T, form)."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, 4, (8,), generator=g)
    teacher = torch.softmax(logits, -1)
    candidates = sample_candidates(4, 4, 3, seed=2, dtype=torch.float64)
    result = select_perturbation(teacher, labels, candidates=candidates, temperature=4.0, form=form,
                                 dtype=torch.float64)  # fmt: skip
    onehot = np.eye(4)[labels.numpy()]
    for index in (0, 1, 2):
        eps = candidates[index].numpy()
        argmins = [_argmin_of_trained_loss(row, eps, 4.0, form) for row in logits.numpy()]
        brier = np.mean(np.sum((np.array(argmins) - onehot) ** 2, axis=1))
        assert result.table["brier"][index] == pytest.approx(brier, abs=1e-6)
        assert result.table["temperature"][index] == 4.0
        assert bool(result.table["eligible"][index])
    # the T = 1 proxy (what the search used to score whatever T was trained) is a different distribution
    at_one = select_perturbation(teacher, labels, candidates=candidates, form=form, dtype=torch.float64)
    assert np.abs(at_one.table["brier"] - result.table["brier"]).max() > 1e-2


def test_temperature_grid_rows_select_a_pair_and_match_single_temperature_searches(overconfident):
    teacher, labels = overconfident
    grid = select_perturbation(teacher, labels, M=4, n_candidates=12, temperature=[1.0, 2.0, 4.0], seed=1)
    assert grid.n_rows == 36 and grid.temperatures == (1.0, 2.0, 4.0)
    np.testing.assert_array_equal(grid.table["candidate"], np.tile(np.arange(12), 3))
    np.testing.assert_array_equal(grid.table["temperature"], np.repeat([1.0, 2.0, 4.0], 12))
    for k, t in enumerate((1.0, 2.0, 4.0)):
        single = select_perturbation(teacher, labels, M=4, n_candidates=12, temperature=t, seed=1)
        rows = slice(12 * k, 12 * (k + 1))
        np.testing.assert_allclose(grid.table["brier"][rows], single.table["brier"], atol=1e-7)
    assert grid.best_index == int(np.argmin(grid.table["brier"]))
    eps, t = grid.selected
    assert t == grid.best_temperature == grid.table["temperature"][grid.best_index]
    assert torch.equal(eps, grid.epsilons[grid.best_candidate])
    # eps = 0 rows are temperature KD: their proxy is the softened teacher, scored independently here
    onehot = np.eye(8)[labels.numpy()]
    for t, row in grid.zero_rows().items():
        softened = teacher.numpy() ** (1 / t)
        softened /= softened.sum(1, keepdims=True)
        expected = np.mean(np.sum((softened - onehot) ** 2, 1))
        assert grid.table["brier"][row] == pytest.approx(expected, abs=1e-6)
    # the selected (eps, T) builds the loss whose proxy was scored
    from selfdistill.ptloss import PTLoss

    loss = PTLoss(**grid.ptloss_kwargs())
    assert loss.temperature == grid.best_temperature and loss.form == "full"
    assert torch.equal(loss.epsilon, grid.best_epsilon)
    assert grid.row(grid.best_candidate) == grid.best_index and grid.row(5, 2.0) == 12 + 5
    random = grid.ptloss_kwargs(grid.row(1, 4.0))
    assert random["temperature"] == 4.0 and torch.equal(random["epsilon"], grid.epsilons[1])
    with pytest.raises(ValueError, match="not in the searched grid"):
        grid.row(1, 3.0)


def test_student_space_scores_the_students_own_prediction(overconfident):
    teacher, labels = overconfident
    result = select_perturbation(teacher, labels, M=3, n_candidates=6, temperature=[1.0, 4.0],
                                 space="student", dtype=torch.float64)  # fmt: skip
    zero = result.zero_rows()  # eps = 0: the student's T = 1 prediction is the teacher at every T
    assert result.table["brier"][zero[4.0]] == pytest.approx(result.table["brier"][zero[1.0]], abs=1e-12)
    proxy = proxy_teacher(teacher, result.epsilons[3], temperature=4.0)  # softened-space minimiser
    sharpened = proxy.numpy() ** 4
    sharpened /= sharpened.sum(1, keepdims=True)
    onehot = np.eye(8)[labels.numpy()]
    expected = np.mean(np.sum((sharpened - onehot) ** 2, 1))
    assert result.table["brier"][6 + 3] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("M", [2, 5, 8])
def test_default_range_is_convex_for_every_candidate_and_both_forms(M):
    from selfdistill.ptloss import convexity_margin

    eps = sample_candidates(7, M, 300, seed=M, dtype=torch.float64)
    u = np.linspace(0.0, 1.0, 401)
    for form in ("full", "truncated"):
        assert float(convexity_margin(eps, form=form).min()) >= 1 - 0.9 - 1e-12
    # independent check of the truncated certificate: H''(u) = sum_m m (m - 1) (1/m + eps_m) u^(m - 2)
    c = eps.numpy() + 1.0 / np.arange(1, M + 1)
    second = sum(m * (m - 1) * c[..., m - 1, None] * u ** (m - 2) for m in range(2, M + 1))
    assert second.min() >= 0.1 - 1e-12


def test_default_range_moves_the_proxy_and_stays_solvable(overconfident):
    """Issue 12.7: the default candidates are all convex and converged and the selected proxy moves the
    overconfident teacher by more than the old default (uniform, scale 0.25) could."""
    teacher, labels = overconfident
    default = select_perturbation(teacher, labels, M=5, n_candidates=30)
    old = select_perturbation(teacher, labels, M=5, n_candidates=30, distribution="uniform", scale=0.25)
    assert np.all(default.table["convex"] == 1) and np.all(default.table["converged"] == 1)
    moved = default.table["eps_shift_tv"][default.best_index]
    assert moved > 0.04 and moved > 2 * old.table["eps_shift_tv"][old.best_index]
    assert default.baseline_score - default.best_score > 2 * (old.baseline_score - old.best_score)


def test_non_converged_rows_are_never_selected(overconfident):
    teacher, labels = overconfident
    # one Newton iteration cannot reach tol 1e-12: every perturbed row fails, eps = 0 (exact) does not
    capped = select_perturbation(teacher, labels, M=5, n_candidates=8, dtype=torch.float64, max_iter=1)
    assert list(capped.table["converged"]) == [1] + [0] * 7
    assert capped.table["brier"][1:].min() < capped.table["brier"][0]  # a failed row scored better ...
    assert capped.best_index == 0  # ... and was not selected
    # a realistic case: large uniform perturbations, some solves fail and many problems are non-convex
    wide = select_perturbation(teacher[:300], labels[:300], M=5, n_candidates=12, distribution="uniform",
                               scale=2.0, class_wise=False, require_convex=False)  # fmt: skip
    t = wide.table
    assert np.any(t["converged"] == 0) and np.any(t["convex"] == 0)
    assert t["converged"][wide.best_index] == 1 and np.all(t["eligible"][t["converged"] == 0] == 0)
    strict = select_perturbation(teacher[:300], labels[:300], candidates=wide.epsilons)  # require_convex
    assert strict.table["convex"][strict.best_index] == 1
    assert np.all(strict.table["eligible"] == strict.table["convex"] * strict.table["converged"])


def test_plot_draws_ineligible_rows_apart(overconfident, tmp_path):
    teacher, labels = overconfident
    result = select_perturbation(teacher, labels, M=5, n_candidates=8, dtype=torch.float64, max_iter=1,
                                 temperature=[1.0, 2.0])  # fmt: skip
    ax = result.plot()
    by_label = {c.get_label(): c for c in ax.collections}
    assert len(by_label["not converged (never selected)"].get_offsets()) == 14
    assert len(by_label["T = 1"].get_offsets()) == 1 and len(by_label["T = 2"].get_offsets()) == 1
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_search_options_are_checked(overconfident):
    teacher, labels = overconfident
    positive = "temperature must be a positive"
    cases = (([], "non-empty list"), ([1.0, 1.0], "repeats"), (0.0, positive), ([2.0, -1.0], positive))
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            select_perturbation(teacher, labels, n_candidates=2, temperature=bad)
    with pytest.raises(ValueError, match="form must be one of"):
        select_perturbation(teacher, labels, n_candidates=2, form="series")
    with pytest.raises(ValueError, match="space must be one of"):
        select_perturbation(teacher, labels, n_candidates=2, space="teacher")
    with pytest.raises(ValueError, match="no eligible candidate"):
        select_perturbation(teacher, labels, n_candidates=3, include_zero=False, max_iter=1,
                            dtype=torch.float64)  # fmt: skip
