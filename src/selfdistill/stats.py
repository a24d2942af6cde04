"""Paired statistics over seeds: how much better is A than B, and how sure are we?

Every comparison in selfdistill (a round against round 0, one distillation method against another, one
regularizer against another) is made on the SAME seeds, so the honest summary is the mean of the paired
differences a_s - b_s with a confidence interval, not two means with two standard deviations.

- The interval is Student's t interval of the mean difference (``scipy.stats.t.interval``), exact when
  the differences are normal; it needs n >= 2 seeds.
- Where the sample is small (n < ``BOOTSTRAP_BELOW``) a percentile bootstrap interval of the mean
  difference (``scipy.stats.bootstrap`` with a fixed seed) is reported beside it: it makes no normality
  assumption, but with so few seeds neither interval is reliable, and the verdict says "few seeds".

NumPy/SciPy only (no torch).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats

__all__ = [
    "BOOTSTRAP_BELOW",
    "PairedComparison",
    "PairedDifference",
    "mean_std",
    "mean_interval",
    "paired_difference",
    "paired_rows",
    "paired_table",
]

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


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (non-finite ones, e.g. a split that does
    not exist, are skipped); (NaN, NaN) when none is finite, std 0 for a single value."""
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` with its ``confidence`` t interval (scipy's
    ``t.interval``); NaN bounds for fewer than 2 values, the mean itself when they are all equal. For plots:
    an interval of the MEAN, not of single seeds (that is the standard deviation)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    std = float(x.std(ddof=1))
    if std == 0.0:
        return mean, mean, mean
    low, high = scipy.stats.t.interval(confidence, x.size - 1, loc=mean, scale=std / math.sqrt(x.size))
    return mean, float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` paired over units (e.g. (data seed, model seed)), and, where units are nested in clusters
    (several model seeds per data seed, several students per teacher), the same over the cluster means.

    ``units`` treats every unit as independent; units of one cluster share it (its split, its teacher), so
    when clusters vary that interval is too narrow, and ``clusters`` (one mean difference per cluster, fewer
    degrees of freedom) is the honest one. ``clusters`` is None when every cluster holds one unit (then the
    two coincide) or there is one cluster only (nothing to generalize over)."""

    units: PairedDifference
    clusters: PairedDifference | None = None
    unit_keys: tuple[str, ...] = ()
    cluster_key: str | None = None

    @property
    def a(self) -> str:
        return self.units.a

    @property
    def b(self) -> str:
        return self.units.b

    def to_dict(self) -> dict[str, Any]:
        """One flat row: the unit-level fields, and ``cluster_*`` fields (NaN/None when not applicable)."""
        row = self.units.to_dict()
        row["verdict"] = self.units.verdict()
        c = self.clusters
        row["n_clusters"] = c.n if c is not None else None
        row["cluster_mean"] = c.mean if c is not None else math.nan
        row["cluster_ci_low"] = c.ci_low if c is not None else math.nan
        row["cluster_ci_high"] = c.ci_high if c is not None else math.nan
        row["cluster_boot_low"] = c.boot_low if c is not None else math.nan
        row["cluster_boot_high"] = c.boot_high if c is not None else math.nan
        return row

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """``+m [lo, hi] (n=..; bootstrap [..]); over k <cluster>s [lo, hi]`` (values times ``scale``)."""

        def interval(low: float, high: float) -> str:
            return f"[{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"

        u = self.units
        text = f"{u.format(scale, digits)} (n={u.n}"
        if u.n < BOOTSTRAP_BELOW and math.isfinite(u.boot_low):
            text += f"; bootstrap {interval(u.boot_low, u.boot_high)}"
        text += ")"
        if self.clusters is not None:
            c = self.clusters
            text += f"; over {c.n} {self.cluster_key or 'cluster'}s {interval(c.ci_low, c.ci_high)}"
        return text


def paired_rows(
    rows: Sequence[dict[str, Any]],
    pairs: Sequence[tuple[Any, Any]],
    *,
    arm: str,
    value: str,
    unit: Sequence[str],
    cluster: str | None = None,
    confidence: float = 0.95,
) -> list[PairedComparison]:
    """Paired comparisons from a long table: ``rows`` are dicts with an ``arm`` column (method, round), the
    ``unit`` columns (what makes a pair: e.g. data seed and model seed) and a ``value`` column.

    For each ``(a, b)`` of ``pairs``, the units holding a finite value for both arms are paired (units
    missing either are left out; ``n`` says how many remain) and :func:`paired_difference` gives the mean
    of ``a - b`` with its interval. With ``cluster`` (one of the unit columns), the per-cluster means of
    the differences are compared too (:class:`PairedComparison`). A unit appearing twice for one arm is an
    error (the pairing would be ambiguous)."""
    unit = tuple(unit)
    if cluster is not None and cluster not in unit:
        raise ValueError(f"paired_rows: cluster {cluster!r} must be one of the unit columns {list(unit)}")
    table: dict[Any, dict[tuple, float]] = {}
    for row in rows:
        key = tuple(row[u] for u in unit)
        by_unit = table.setdefault(row[arm], {})
        if key in by_unit:
            where = dict(zip(unit, key, strict=True))
            raise ValueError(f"paired_rows: {arm}={row[arm]!r} has two rows for {where}")
        by_unit[key] = float(row[value])
    out = []
    for a, b in pairs:
        missing = [name for name in (a, b) if name not in table]
        if missing:
            raise ValueError(f"paired_rows: no rows with {arm}={missing[0]!r}; known: {list(table)}")
        keys = sorted(
            k for k in table[a].keys() & table[b].keys()
            if math.isfinite(table[a][k]) and math.isfinite(table[b][k])
        )  # fmt: skip
        if not keys:
            raise ValueError(f"paired_rows: {a!r} and {b!r} share no unit with finite {value}")
        names = (str(a), str(b))
        units = paired_difference([table[a][k] for k in keys], [table[b][k] for k in keys], names=names,
                                  confidence=confidence)  # fmt: skip
        clusters = None
        if cluster is not None:
            position = unit.index(cluster)
            groups: dict[Any, list[float]] = {}
            for k in keys:
                groups.setdefault(k[position], []).append(table[a][k] - table[b][k])
            if len(groups) > 1 and any(len(g) > 1 for g in groups.values()):
                means = [float(np.mean(g)) for _, g in sorted(groups.items())]
                clusters = paired_difference(means, [0.0] * len(means), names=names, confidence=confidence)
        out.append(PairedComparison(units, clusters, unit, cluster))
    return out
