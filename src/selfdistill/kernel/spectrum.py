"""One eigendecomposition of G = [g(x_j, x_k)] / K serves every round (Section 3 of Mobahi et al. 2020).

``Spectrum.from_gram`` validates the raw kernel matrix (finite, square, symmetric, positive
semi-definite up to a tolerance), computes G = V diag(d) V^T with d ascending (paper convention, the
1/K inside G), clips round-off negatives and round-off-sized eigenvalues to exactly 0 (null space),
and rotates labels: z = V^T y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

#: default relative tolerance for asymmetry max|K - K^T| / max|K|.
SYMMETRY_RTOL = 1e-8
#: default relative tolerance for negative eigenvalues: d_min >= -PSD_RTOL * d_max is treated as round-off
#: (loose enough for kernel matrices computed in float32, whose round-off reaches ~1e-7 relative).
PSD_RTOL = 1e-6


@dataclass(frozen=True)
class Spectrum:
    """Eigendecomposition of G = gram / K (ascending eigenvalues, eigenvectors as columns).

    eigenvalues: d >= 0 (round-off clipped to 0; ``null_mask`` marks the exact zeros).
    eigenvectors: V with G = V diag(d) V^T.
    n_samples: K.
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
    ) -> Spectrum:
        """Validate the RAW kernel matrix [g(x_j, x_k)] and decompose G = gram / K with scipy.linalg.eigh."""
        gram = np.asarray(gram, dtype=float)
        if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
            raise ValueError(
                f"gram must be a square kernel matrix [g(x_j, x_k)] of shape (K, K), got shape {gram.shape}"
            )
        n = gram.shape[0]
        if n == 0:
            raise ValueError("gram is empty: need at least one training point")
        if not np.all(np.isfinite(gram)):
            bad = int(np.size(gram) - np.count_nonzero(np.isfinite(gram)))
            raise ValueError(f"gram contains {bad} NaN or infinite entries; check inputs, kernel params")
        scale = float(np.max(np.abs(gram)))
        asym = float(np.max(np.abs(gram - gram.T)))
        if asym > symmetry_rtol * max(scale, np.finfo(float).tiny):
            raise ValueError(
                f"gram is not symmetric: max|K - K^T| = {asym:.3g} (max|K| = {scale:.3g}, relative "
                f"{asym / scale:.3g} > symmetry_rtol={symmetry_rtol:g}); pass a symmetric kernel matrix, "
                "e.g. (K + K.T) / 2"
            )
        G = (gram + gram.T) / (2.0 * n)
        d, V = scipy.linalg.eigh(G, driver=driver, overwrite_a=True, check_finite=False)
        d_max = float(d[-1]) if n else 0.0
        if d_max <= 0.0:
            if d_max < 0.0 or np.any(d < 0.0):
                raise ValueError(
                    f"gram is negative definite (largest eigenvalue of G {d_max:.3g}); use a positive "
                    "semi-definite kernel"
                )
        elif d[0] < -psd_rtol * d_max:
            raise ValueError(
                f"gram is not positive semi-definite: most negative eigenvalue of G = gram/K is {d[0]:.3g}, "
                f"{d[0] / d_max:.3g} relative to the largest ({d_max:.3g}), beyond psd_rtol={psd_rtol:g}; "
                "use a positive semi-definite kernel (rbf, laplacian, polynomial with coef0 >= 0, ...), or "
                "add jitter to the diagonal: gram + delta * I"
            )
        # round-off sized eigenvalues (numpy.linalg.matrix_rank's tolerance) are exact zeros: null space.
        null_tol = max(d_max, 0.0) * n * np.finfo(float).eps
        d = np.where(d <= null_tol, 0.0, d)
        return cls(eigenvalues=d, eigenvectors=V, n_samples=n)

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
