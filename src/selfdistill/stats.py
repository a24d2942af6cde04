"""Paired statistics over seeds: how much better is A than B, and how sure are we?

Every comparison in selfdistill (a round against round 0, one distillation method against another, one
regularizer against another) is made on the SAME seeds, so the honest summary is the mean of the paired
differences a_s - b_s with a confidence interval, not two means with two standard deviations.

- The interval is Student's t interval of the mean difference (``scipy.stats.t.interval``), exact when
  the differences are normal; it needs n >= 2 seeds.
- Where the sample is small (n < :data:`BOOTSTRAP_BELOW`) a percentile bootstrap interval of the mean
  difference (``scipy.stats.bootstrap`` with a fixed seed) is reported beside it: it makes no normality
  assumption, but with so few seeds neither interval is reliable, and the verdict says "few seeds".

NumPy/SciPy only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats

__all__ = ["BOOTSTRAP_BELOW", "PairedDifference", "paired_difference", "paired_table"]

#: below this many pairs a bootstrap interval is reported beside the t interval.
BOOTSTRAP_BELOW = 10
#: fewer pairs than this get the "few seeds" caveat in the verdict.
FEW_SEEDS = 5


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired seeds with a confidence interval; prints as ``+m [lo, hi]``."""

    a: str
    b: str
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    boot_low: float = math.nan
    boot_high: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        """True when the t interval lies entirely on one side of zero."""
        return bool(self.ci_low > 0.0 or self.ci_high < 0.0)

    def verdict(self, higher_is_better: bool = True) -> str:
        """'a better', 'b better' or 'tie' (interval contains zero), with a caveat for few seeds."""
        if self.n < 2 or not math.isfinite(self.ci_low):
            return "undetermined (fewer than 2 seeds)"
        if not self.excludes_zero:
            word = "tie"
        else:
            a_wins = (self.mean > 0.0) == higher_is_better
            word = f"{self.a} better" if a_wins else f"{self.b} better"
        return word + (" (few seeds)" if self.n < FEW_SEEDS else "")

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """``+m [+lo, +hi]`` with values multiplied by ``scale`` (100 for percentage points)."""
        m, lo, hi = (scale * v for v in (self.mean, self.ci_low, self.ci_high))
        return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    def __str__(self) -> str:
        return f"{self.a} - {self.b}: {self.format()} ({self.confidence:.0%} t interval, n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["excludes_zero"] = self.excludes_zero
        return out


def _as_pairs(a: Iterable[float], b: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(a), dtype=float)
    y = np.asarray(list(b), dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"paired values need the same number of seeds on both sides, got {x.shape} and {y.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired values contain NaN or infinite entries; drop those seeds on both sides")
    return x - y


def paired_difference(
    a: Iterable[float],
    b: Iterable[float],
    *,
    names: tuple[str, str] = ("a", "b"),
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedDifference:
    """The mean paired difference ``a - b`` (seed by seed) with its ``confidence`` t interval.

    Parameters
    ----------
    a, b : iterable of float
        One value per seed, in the same seed order on both sides (finite).
    names : tuple of str, default=("a", "b")
        Names of the two sides, for printing and verdicts.
    confidence : float, default=0.95
        Level of the intervals, in (0, 1).
    n_resamples : int, default=9999
        Bootstrap resamples (fewer than ``BOOTSTRAP_BELOW`` pairs).
    seed : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    PairedDifference
        Mean, standard deviation and t interval of the differences; with fewer than
        :data:`BOOTSTRAP_BELOW` pairs also a percentile bootstrap interval (``boot_low``, ``boot_high``).
        One pair gives NaN intervals.

    Examples
    --------
    >>> from selfdistill.stats import paired_difference
    >>> d = paired_difference([0.91, 0.93, 0.92, 0.95], [0.90, 0.91, 0.92, 0.93], names=("sd", "ridge"))
    >>> round(d.mean, 4), d.verdict()
    (0.0125, 'tie (few seeds)')
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1), e.g. 0.95")
    diff = _as_pairs(a, b)
    n = int(diff.size)
    if n == 0:
        raise ValueError("paired_difference needs at least one pair of values")
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(names[0], names[1], n, mean, math.nan, math.nan, math.nan, confidence)
    std = float(diff.std(ddof=1))
    if std == 0.0:
        low = high = mean
    else:
        low, high = scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    boot_low = boot_high = math.nan
    if n < BOOTSTRAP_BELOW:
        if std == 0.0:
            boot_low = boot_high = mean
        else:
            boot = scipy.stats.bootstrap(
                (diff,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method="percentile",
                rng=np.random.default_rng(seed),
            )
            boot_low, boot_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return PairedDifference(
        names[0], names[1], n, mean, std, float(low), float(high), confidence, boot_low, boot_high
    )


def paired_table(
    values: dict[str, Sequence[float]],
    pairs: Sequence[tuple[str, str]],
    *,
    confidence: float = 0.95,
) -> list[PairedDifference]:
    """:func:`paired_difference` for each ``(a, b)`` of ``pairs``, values by name (same seed order)."""
    missing = sorted({name for pair in pairs for name in pair} - set(values))
    if missing:
        raise ValueError(f"paired_table: no values for {', '.join(missing)}; known: {', '.join(values)}")
    return [
        paired_difference(values[a], values[b], names=(a, b), confidence=confidence) for a, b in pairs
    ]
