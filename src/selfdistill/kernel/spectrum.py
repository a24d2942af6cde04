"""One eigendecomposition of G = [g(x_j, x_k)] / K serves every round (Section 3 of Mobahi et al. 2020).

``Spectrum.from_gram`` validates the raw kernel matrix (finite, square, symmetric, positive
semi-definite up to a tolerance), computes G = V diag(d) V^T with d ascending (paper convention, the
1/K inside G), clips round-off negatives and round-off-sized eigenvalues to exactly 0 (null space),
and rotates labels: z = V^T y.

Memory: the checks and the symmetrization run in row blocks (no K x K temporaries); with
``overwrite_gram=True`` G is formed in the caller's matrix, so the whole route holds two K x K matrices
(G, then V). ``Spectrum.from_eigh`` is the shared post-processing of any eigensolver's output (the
PyTorch backend uses it too, see selfdistill.kernel.backends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from selfdistill.kernel.memory import row_block

#: default relative tolerance for asymmetry max|K - K^T| / max|K|.
SYMMETRY_RTOL = 1e-8
#: default relative tolerance for negative eigenvalues: d_min >= -PSD_RTOL * d_max is treated as round-off
#: (loose enough for kernel matrices computed in float32, whose round-off reaches ~1e-7 relative).
PSD_RTOL = 1e-6
#: float types the exact route decomposes in.
EIGH_DTYPES = ("float64", "float32")
#: float32 decompositions: eigenvalues <= FLOAT32_NULL_EPS * eps32 * d_max count as zero. (The float64 rule,
#: K * eps * d_max, would discard real eigenvalues up to 5e-3 d_max at K = 40,000 in float32, while the
#: float32 eigensolvers' absolute eigenvalue errors are about one eps32 * d_max.)
FLOAT32_NULL_EPS = 8.0


def null_rtol(dtype: str, n_samples: int) -> float:
    """Relative tolerance below which an eigenvalue of a ``dtype`` decomposition counts as zero:
    K * eps (numpy.linalg.matrix_rank's rule) in float64, FLOAT32_NULL_EPS * eps in float32."""
    eps = float(np.finfo(dtype).eps)
    return n_samples * eps if dtype == "float64" else FLOAT32_NULL_EPS * eps


def _square_blocks(n: int, itemsize: int) -> int:
    """Side of the square blocks used by the blocked checks (about BLOCK_BYTES each)."""
    return max(1, int(np.sqrt(row_block(1, itemsize))))


def gram_scale_and_asymmetry(gram: np.ndarray) -> tuple[int, float, float]:
    """(number of non-finite entries, max|K|, max|K - K^T|), in row blocks (no K x K temporaries)."""
    n = gram.shape[0]
    step = row_block(n, max(gram.itemsize, 8))
    bad, scale, asym = 0, 0.0, 0.0
    for start in range(0, n, step):
        rows = gram[start : start + step]
        finite = np.isfinite(rows)
        if not finite.all():
            bad += int(rows.size - np.count_nonzero(finite))
            continue
        scale = max(scale, float(np.max(np.abs(rows))))
        asym = max(asym, float(np.max(np.abs(rows - gram[:, start : start + step].T))))
    return bad, scale, asym


def symmetrize_scaled(gram: np.ndarray, out: np.ndarray, n_samples: int) -> np.ndarray:
    """out = (gram + gram^T) / (2 K) in square blocks; ``out`` may be ``gram`` itself (in place).

    Each pair of blocks (I, J), J >= I, is read before it is written, so the in-place update is exact and
    gives the same numbers as the one-shot expression."""
    n = gram.shape[0]
    b = _square_blocks(n, out.itemsize)
    denom = 2.0 * n_samples
    for i in range(0, n, b):
        for j in range(i, n, b):
            upper = gram[i : i + b, j : j + b]
            lower = gram[j : j + b, i : i + b]
            avg = ((upper + lower.T) / denom).astype(out.dtype, copy=False)
            out[i : i + b, j : j + b] = avg
            out[j : j + b, i : i + b] = avg.T
    return out


def check_gram_statistics(bad: int, scale: float, asym: float, *, symmetry_rtol: float) -> None:
    """One-line ValueError for a kernel matrix with ``bad`` non-finite entries, or whose asymmetry
    max|K - K^T| = ``asym`` exceeds ``symmetry_rtol`` times its scale max|K| (every backend's check)."""
    if bad:
        raise ValueError(f"gram contains {bad} NaN or infinite entries; check inputs, kernel params")
    if asym > symmetry_rtol * max(scale, np.finfo(float).tiny):
        raise ValueError(
            f"gram is not symmetric: max|K - K^T| = {asym:.3g} (max|K| = {scale:.3g}, relative "
            f"{asym / scale:.3g} > symmetry_rtol={symmetry_rtol:g}); pass a symmetric kernel matrix, "
            "e.g. (K + K.T) / 2"
        )


@dataclass(frozen=True)
class Spectrum:
    """Eigendecomposition of ``G = gram / K`` (ascending eigenvalues, eigenvectors as columns).

    Build it with :meth:`from_gram` from the raw kernel matrix, then pass it to :func:`self_distill` or to
    any ``*_path`` function: one eigendecomposition serves every epsilon, every round and every filter.

    Attributes
    ----------
    eigenvalues : ndarray of shape (K,)
        d >= 0, ascending (round-off clipped to 0; :attr:`null_mask` marks the exact zeros).
    eigenvectors : ndarray of shape (K, K)
        V with ``G = V diag(d) V^T``.
    n_samples : int
        K.

    Examples
    --------
    >>> import numpy as np
    >>> from selfdistill.kernel import Spectrum, kernel_matrix, self_distill
    >>> x = np.linspace(0, 1, 20)[:, None]
    >>> spectrum = Spectrum.from_gram(kernel_matrix(x, kernel="rbf", gamma=5.0))
    >>> chains = [self_distill(spectrum, np.cos(3 * x[:, 0]), eps) for eps in (0.01, 0.05)]
    >>> [chain.n_rounds > 0 for chain in chains]
    [True, True]
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    n_samples: int

    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray,
        *,
        symmetry_rtol: float = SYMMETRY_RTOL,
        psd_rtol: float = PSD_RTOL,
        driver: str | None = None,
        overwrite_gram: bool = False,
        dtype: str = "float64",
    ) -> Spectrum:
        """Validate the RAW kernel matrix ``[g(x_j, x_k)]`` and decompose ``G = gram / K`` (SciPy's eigh).

        Parameters
        ----------
        gram : ndarray of shape (K, K)
            The raw kernel matrix (no 1/K): finite, symmetric, positive semi-definite up to the tolerances.
        symmetry_rtol : float, default=1e-8
            Largest accepted ``max|K - K^T| / max|K|``.
        psd_rtol : float, default=1e-6
            Negative eigenvalues down to ``-psd_rtol * d_max`` are round-off (clipped to 0).
        driver : str or None, default=None
            ``scipy.linalg.eigh`` driver (None: SciPy's default).
        overwrite_gram : bool, default=False
            Form G in ``gram``'s memory (saves one K x K copy; ``gram`` is destroyed).
        dtype : {"float64", "float32"}, default="float64"
            float32 halves the memory; its eigenvalues are accurate to about 1e-7 of the largest, and
            smaller ones count as zero (see :meth:`from_eigh`).

        Returns
        -------
        Spectrum
        """
        if dtype not in EIGH_DTYPES:
            raise ValueError(f"dtype={dtype!r} must be one of {EIGH_DTYPES}")
        gram = np.asarray(gram)
        if gram.dtype.kind not in "iuf":
            gram = gram.astype(float)
        if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
            raise ValueError(
                f"gram must be a square kernel matrix [g(x_j, x_k)] of shape (K, K), got shape {gram.shape}"
            )
        n = gram.shape[0]
        if n == 0:
            raise ValueError("gram is empty: need at least one training point")
        check_gram_statistics(*gram_scale_and_asymmetry(gram), symmetry_rtol=symmetry_rtol)
        in_place = overwrite_gram and gram.dtype == np.dtype(dtype) and gram.flags.c_contiguous
        G = symmetrize_scaled(gram, gram if in_place else np.empty((n, n), dtype=dtype), n)
        # G is exactly symmetric, so G.T (a Fortran-ordered view of the same memory) is G: LAPACK works in
        # that memory with overwrite_a=True instead of receiving a Fortran-ordered copy.
        d, V = scipy.linalg.eigh(G.T, driver=driver, overwrite_a=True, check_finite=False)
        del G
        return cls.from_eigh(d, V, n, psd_rtol=psd_rtol, null_rtol=null_rtol(dtype, n))

    @classmethod
    def from_eigh(
        cls,
        eigenvalues: np.ndarray,
        eigenvectors: np.ndarray,
        n_samples: int,
        *,
        psd_rtol: float = PSD_RTOL,
        null_rtol: float | None = None,
    ) -> Spectrum:
        """Spectrum from an eigensolver's ascending eigenvalues d and eigenvectors V of ``G = gram / K``.

        Rejects an indefinite G (``d_min < -max(psd_rtol, null_rtol) * d_max``), then sets round-off sized
        eigenvalues, ``d <= null_rtol * d_max``, to exactly 0: the null space. ``null_rtol`` defaults to the
        float64 rule ``K * eps`` (``numpy.linalg.matrix_rank``'s tolerance); see the module function
        ``null_rtol`` for float32."""
        d = np.asarray(eigenvalues, dtype=float)
        n = int(n_samples)
        d_max = float(d[-1]) if d.size else 0.0
        if d_max <= 0.0:
            if d_max < 0.0 or np.any(d < 0.0):
                raise ValueError(
                    f"gram is negative definite (largest eigenvalue of G {d_max:.3g}); use a positive "
                    "semi-definite kernel"
                )
        rtol = null_rtol if null_rtol is not None else n * float(np.finfo(float).eps)
        if d_max > 0.0 and d[0] < -max(psd_rtol, rtol) * d_max:
            raise ValueError(
                f"gram is not positive semi-definite: most negative eigenvalue of G = gram/K is {d[0]:.3g}, "
                f"{d[0] / d_max:.3g} relative to the largest ({d_max:.3g}), beyond psd_rtol={psd_rtol:g}; "
                "use a positive semi-definite kernel (rbf, laplacian, polynomial with coef0 >= 0, ...), or "
                "add jitter to the diagonal: gram + delta * I"
            )
        null_tol = max(d_max, 0.0) * rtol
        d = np.where(d <= null_tol, 0.0, d)
        return cls(eigenvalues=d, eigenvectors=eigenvectors, n_samples=n)

    @property
    def null_mask(self) -> np.ndarray:
        """True where the eigenvalue is (numerically) zero: directions the fit cannot move along."""
        return self.eigenvalues == 0.0

    @property
    def condition_number(self) -> float:
        """kappa = d_max / d_min (inf when G is singular)."""
        d = self.eigenvalues
        return float(d[-1] / d[0]) if d[0] > 0 else float("inf")

    def rotate(self, y: np.ndarray) -> np.ndarray:
        """z = V^T y (works for a K-vector or a (K, m) array of output columns)."""
        return self.eigenvectors.T @ y

    def unrotate(self, z: np.ndarray) -> np.ndarray:
        """y = V z."""
        return self.eigenvectors @ z
