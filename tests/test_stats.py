"""Paired statistics: the interval is scipy's paired t interval, computed independently here."""

import math

import numpy as np
import pytest
import scipy.stats

from selfdistill.stats import BOOTSTRAP_BELOW, paired_difference, paired_table

# a fixed table: test accuracy of two methods on the same 6 seeds
A = [0.951, 0.962, 0.947, 0.958, 0.955, 0.949]
B = [0.944, 0.950, 0.946, 0.949, 0.951, 0.940]


def test_interval_equals_scipys_paired_t_test_interval():
    result = paired_difference(A, B, names=("chain", "round0"))
    reference = scipy.stats.ttest_rel(A, B).confidence_interval(0.95)
    diffs = np.subtract(A, B)
    assert result.mean == pytest.approx(diffs.mean(), abs=1e-15)
    assert (result.ci_low, result.ci_high) == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert result.n == 6 and result.excludes_zero and result.verdict() == "chain better"
    assert result.verdict(higher_is_better=False) == "round0 better"


def test_small_samples_also_get_a_bootstrap_interval_around_the_mean():
    result = paired_difference(A, B)
    assert result.n < BOOTSTRAP_BELOW
    assert result.boot_low <= result.mean <= result.boot_high
    large = paired_difference(np.arange(12.0), np.arange(12.0)[::-1])
    assert math.isnan(large.boot_low)


def test_a_tie_when_the_interval_contains_zero_and_few_seeds_are_flagged():
    result = paired_difference([1.0, 2.0, 3.0], [2.0, 1.0, 3.1])
    assert not result.excludes_zero and result.verdict() == "tie (few seeds)"
    assert "[" in result.format(scale=100)


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="no values for c"):
        paired_table({"a": [1.0], "b": [2.0]}, [("a", "c")])


def test_one_pair_has_no_interval():
    result = paired_difference([1.0], [0.5])
    assert result.mean == 0.5 and math.isnan(result.ci_low) and result.verdict().startswith("undetermined")


def test_mean_std_skips_non_finite_values_like_the_statistics_module():
    import statistics

    from selfdistill.stats import mean_std

    assert mean_std([0.9, math.nan, 0.8, 0.7]) == pytest.approx(
        (statistics.fmean([0.9, 0.8, 0.7]), statistics.stdev([0.9, 0.8, 0.7]))
    )
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([math.nan]))
