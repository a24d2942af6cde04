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
    assert float(a.abs().max()) <= 0.25 and float(a[1:].abs().max()) > 0.2  # uniform(-0.25, 0.25) default
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
    assert "best candidate" in text and "plain teacher" in text
    rows = PerturbationSearchResult.read_csv(result.to_csv(tmp_path / "table.csv"))
    assert len(rows) == 30 and rows[result.best_index]["brier"] == pytest.approx(result.best_score)
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
