"""Kernel functions by name: scikit-learn's pairwise kernels, callables, "precomputed", and the
spline Green's function (59) of Mobahi, Farajtabar, Bartlett (2020), Section 4.

Every function here returns the RAW kernel matrix [g(x_j, x_k)] (no 1/K); the engine divides by K.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics.pairwise import PAIRWISE_KERNEL_FUNCTIONS, pairwise_kernels

KernelSpec = str | Callable[..., Any]

#: kernel names accepted besides callables: scikit-learn's pairwise kernels, "precomputed" and "spline".
KERNEL_NAMES: tuple[str, ...] = tuple(sorted(PAIRWISE_KERNEL_FUNCTIONS)) + ("precomputed", "spline")


def spline_green(x: np.ndarray | float, t: np.ndarray | float) -> np.ndarray:
    """Green's function (59) of R(f) = int_0^1 f''(x)^2 dx with f(0)=f(1)=f''(0)=f''(1)=0:

    g(x, t) = (1/6) max(x - t, 0)^3 - (1/6) x (1 - t) (x^2 - 2t + t^2),   x, t in [0, 1].

    Broadcasts like numpy. Symmetric in (x, t); vanishes at x = 0 and x = 1.
    """
    x = np.asarray(x, dtype=float)
    t = np.asarray(t, dtype=float)
    return np.maximum(x - t, 0.0) ** 3 / 6.0 - x * (1.0 - t) * (x * x - 2.0 * t + t * t) / 6.0


def _as_unit_interval_column(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim == 2:
        if X.shape[1] != 1:
            raise ValueError(
                f"kernel='spline' is the 1-D Green's function (59): {name} must have exactly one feature, "
                f"got shape {X.shape}; pass a column of points in [0, 1]"
            )
        X = X[:, 0]
    if X.ndim != 1:
        raise ValueError(f"kernel='spline': {name} must be 1-D or a single column, got shape {X.shape}")
    if X.size and (np.nanmin(X) < 0.0 or np.nanmax(X) > 1.0):
        raise ValueError(
            f"kernel='spline' is defined on [0, 1]: {name} has values in "
            f"[{np.nanmin(X):g}, {np.nanmax(X):g}]; "
            "rescale the inputs to [0, 1] (e.g. sklearn.preprocessing.MinMaxScaler)"
        )
    return X


def kernel_matrix(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    kernel: KernelSpec = "rbf",
    *,
    gamma: float | None = None,
    degree: float = 3,
    coef0: float = 1,
    kernel_params: dict[str, Any] | None = None,
) -> np.ndarray:
    """RAW kernel matrix ``[g(x_i, y_j)]`` (no 1/K), by name or callable.

    Parameters
    ----------
    X : ndarray of shape (n, p)
        First argument of the kernel (``"spline"``: one column of points in [0, 1]).
    Y : ndarray of shape (m, p) or None, default=None
        Second argument (default: X).
    kernel : str or callable, default="rbf"
        A name from ``KERNEL_NAMES`` (scikit-learn's pairwise kernels and ``"spline"``, the Green's
        function (59)), a callable ``g(x_row, y_row) -> float`` (passed to
        ``sklearn.metrics.pairwise.pairwise_kernels`` with ``kernel_params``), or ``"precomputed"`` (X is
        returned).
    gamma, degree, coef0 : float
        Passed to the scikit-learn kernels that take them (as ``KernelRidge`` does).
    kernel_params : dict or None, default=None
        Further keyword arguments of the kernel.

    Returns
    -------
    ndarray of shape (n, m)
    """
    if isinstance(kernel, str) and kernel == "spline":
        x = _as_unit_interval_column(X, "X")
        y = x if Y is None else _as_unit_interval_column(Y, "Y")
        return spline_green(x[:, None], y[None, :])
    if isinstance(kernel, str) and kernel not in KERNEL_NAMES:
        raise ValueError(f"kernel={kernel!r} is unknown; use a callable or one of {', '.join(KERNEL_NAMES)}")
    if kernel in ("rbf", "laplacian", "chi2") and gamma is not None and not float(gamma) > 0.0:
        raise ValueError(
            f"gamma={gamma!r} must be > 0 for kernel={kernel!r} (exp(-gamma * distance)): gamma <= 0 gives a "
            "constant or non positive semi-definite matrix; use gamma > 0 or None (1 / n_features)"
        )
    if callable(kernel):
        params = dict(kernel_params or {})
    else:
        # gamma=None means the kernel's own default (1 / n_features for rbf, 1 for chi2): not passed on,
        # since some scikit-learn kernels (chi2) take None literally
        params = {"gamma": gamma, "degree": degree, "coef0": coef0}
        params = {key: value for key, value in params.items() if value is not None}
        params.update(kernel_params or {})
    return pairwise_kernels(X, Y, metric=kernel, filter_params=True, **params)
