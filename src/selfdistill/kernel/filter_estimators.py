"""scikit-learn estimators for the spectral filters of :mod:`selfdistill.kernel.filters` (one shared base).

Each estimator fits ONE eigendecomposition of ``G = Kxx / K``, builds its method's ``FilterPath`` over a
grid of its hyperparameter and predicts with one step of it: the given value, or, with a grid (``"auto"``
or a sequence), the step chosen by ``selection`` (``"gcv"`` default, ``"holdout"``, ``"kfold"``; see
:mod:`selfdistill.kernel.selection`). Attributes after fit: ``path_`` (FilterPath: filter per eigenvalue
and step, dof per step, predictions), ``step_`` (index of the step used), ``selection_`` (SelectionResult
or None) and ``dof_`` (``tr h`` of the step used)::

    SpectralRidge(alpha)              d / (d + c), c = alpha / K
    KernelBoosting(alpha, n_steps)    1 - (c / (d + c))^s, s ridge fits on the residuals
    KernelGradientDescent(n_steps)    1 - (1 - eta d)^t (eta = step_size, default 1 / d_max)
    KernelGradientFlow(time)          1 - exp(-s d)
    SpectralCutoff(n_components)      1{d >= tau}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from selfdistill.kernel.filters import (
    FilterPath,
    boosting_path,
    cutoff_path,
    geometric_steps,
    gradient_descent_path,
    gradient_flow_path,
    ridge_path,
)
from selfdistill.kernel.kernels import kernel_matrix
from selfdistill.kernel.selection import check_selection, select_by_gcv, select_held_out
from selfdistill.kernel.spectrum import Spectrum

#: grid sizes of the "auto" settings
AUTO_GRID_SIZE = 40


class SpectralFilterRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Shared base of the filter estimators: kernel, eigendecomposition, the path, the choice of the step.

    :class:`SpectralRidge`, :class:`KernelBoosting`, :class:`KernelGradientDescent`,
    :class:`KernelGradientFlow` and :class:`SpectralCutoff` inherit ``fit``, ``predict`` and
    ``staged_predict`` from here. Subclasses define ``_grid()`` (the hyperparameter values to build the path
    on, and whether to choose among them) and ``_path(spectrum, y, grid)``. Kernel parameters as in
    KernelRidge; ``selection``, ``n_folds``, ``holdout_fraction``, ``random_state`` as in
    ``KernelSelfDistillation(n_rounds="auto")``.
    """

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:  # pragma: no cover
        raise NotImplementedError

    @property
    def _precomputed(self) -> bool:
        return isinstance(self.kernel, str) and self.kernel == "precomputed"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self._precomputed
        return tags

    def _kernel(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        return kernel_matrix(
            X, Y, self.kernel, gamma=self.gamma, degree=self.degree, coef0=self.coef0,
            kernel_params=self.kernel_params,
        )  # fmt: skip

    def _fit_path(self, X: np.ndarray, y: np.ndarray, grid: Any = None) -> tuple[FilterPath, bool]:
        spectrum = Spectrum.from_gram(self._kernel(X))
        own_grid, choose = self._grid(spectrum)
        return self._path(spectrum, y, own_grid if grid is None else grid), choose

    def fit(self, X: Any, y: Any) -> SpectralFilterRegressor:
        """One eigendecomposition, the method's path over its grid, and the choice of the step.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, n_samples)
            Training inputs, or the raw kernel matrix with ``kernel="precomputed"``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Labels.

        Returns
        -------
        SpectralFilterRegressor
            The fitted estimator (``self``).
        """
        from selfdistill.kernel.estimator import _require_finite

        _require_finite("X", X)
        _require_finite("y", y)
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if self._precomputed and X.shape[0] != X.shape[1]:
            raise ValueError(
                f"kernel='precomputed': X must be the square training kernel matrix, got shape {X.shape}"
            )
        path, choose = self._fit_path(X, y)
        self.selection_ = None
        step = path.n_steps - 1
        if choose and path.n_steps > 1:
            check_selection(self.selection, self.n_folds, self.holdout_fraction)
            if self.selection == "gcv":
                self.selection_ = select_by_gcv(path)
            else:
                grid = path.params

                def fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_held: np.ndarray) -> np.ndarray:
                    sub, _ = clone(self)._fit_path(X_train, y_train, grid)
                    k = X_held if self._precomputed else self._kernel(X_held, X_train)
                    return sub.test_predictions(k)

                self.selection_ = select_held_out(
                    path, fit_predict, X, y, self.selection, n_folds=self.n_folds,
                    holdout_fraction=self.holdout_fraction, random_state=self.random_state,
                    precomputed=self._precomputed,
                )  # fmt: skip
            step = self.selection_.chosen
        self.path_ = path
        self.step_ = int(step)
        self.dof_ = float(path.dof[step])
        self.X_fit_ = X
        return self

    def _test_kernel(self, X: Any) -> np.ndarray:
        from selfdistill.kernel.estimator import _require_finite

        check_is_fitted(self)
        _require_finite("X", X)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X if self._precomputed else self._kernel(X, self.X_fit_)

    def predict(self, X: Any, step: int | None = None) -> np.ndarray:
        """Predictions of the chosen (or given) step of the path."""
        kernel_test_train = self._test_kernel(X)
        return self.path_.predict(kernel_test_train, self.step_ if step is None else step)

    def staged_predict(self, X: Any) -> Iterator[np.ndarray]:
        """Predictions of every step of the path, in order."""
        kernel_test_train = self._test_kernel(X)
        yield from self.path_.staged_predict(kernel_test_train)


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


def _grid_or_value(value: Any, name: str, auto_grid: np.ndarray) -> tuple[np.ndarray, bool]:
    """ "auto" -> (auto_grid, choose); a sequence -> (it, choose); a number -> ([it], no choice)."""
    if _is_auto(value):
        return auto_grid, True
    if isinstance(value, str | bool) or value is None:
        raise ValueError(f"{name}={value!r} must be a positive number, a sequence of them, or 'auto'")
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    return arr, arr.size > 1


class SpectralRidge(SpectralFilterRegressor):
    """Kernel ridge as a spectral filter ``d / (d + c)``, ``c = alpha / K`` (equals sklearn's KernelRidge).

    Parameters
    ----------
    alpha : float, sequence of float or "auto", default=1.0
        scikit-learn's ``KernelRidge`` alpha; a sequence is a grid to choose from by ``selection``;
        ``"auto"`` is 40 values, c from 1e-8 to 10 times the largest eigenvalue of G, log-spaced.
    kernel : str or callable, default="rbf"
        As in :class:`KernelSelfDistillation` (scikit-learn kernel names, ``"spline"``, a callable,
        ``"precomputed"``).
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How a grid's step is chosen (see :mod:`selfdistill.kernel.selection`).
    n_folds, holdout_fraction, random_state
        For ``selection="kfold"`` / ``"holdout"``, as in :class:`KernelSelfDistillation`.

    Attributes
    ----------
    path_ : FilterPath
        The filter per eigenvalue and step, dof per step, predictions.
    step_ : int
        Index of the step ``predict`` uses (the given value, or the chosen one).
    selection_ : SelectionResult or None
        The criterion per step and the choice (None without a grid).
    dof_ : float
        ``tr h`` of the step used.
    X_fit_ : ndarray
        Training inputs (the kernel's second argument).

    See Also
    --------
    selfdistill.kernel.filter_estimators.SpectralFilterRegressor : ``fit``, ``predict``, ``staged_predict``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> from selfdistill.kernel import SpectralRidge
    >>> X = np.linspace(0, 1, 40)[:, None]
    >>> y = np.sin(6 * X[:, 0])
    >>> ours = SpectralRidge(0.1, kernel="rbf", gamma=10.0).fit(X, y).predict(X)
    >>> sklearn = KernelRidge(alpha=0.1, kernel="rbf", gamma=10.0).fit(X, y).predict(X)
    >>> bool(np.allclose(ours, sklearn))
    True
    """

    def __init__(
        self, alpha: Any = 1.0, *, kernel: Any = "rbf", gamma: float | None = None, degree: float = 3,
        coef0: float = 1, kernel_params: dict | None = None, selection: str = "gcv", n_folds: int = 5,
        holdout_fraction: float = 0.2, random_state: Any = None,
    ) -> None:  # fmt: skip
        self.alpha = alpha
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0
        self.kernel_params, self.selection, self.n_folds = kernel_params, selection, n_folds
        self.holdout_fraction, self.random_state = holdout_fraction, random_state

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:
        d_max = max(float(spectrum.eigenvalues[-1]), np.finfo(float).tiny)
        auto = spectrum.n_samples * d_max * np.geomspace(10.0, 1e-8, AUTO_GRID_SIZE)
        return _grid_or_value(self.alpha, "alpha", auto)

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:
        return ridge_path(spectrum, y, grid)


class KernelBoosting(SpectralFilterRegressor):
    """L2-boosting / iterated Tikhonov with a ``KernelRidge(alpha)`` base learner refitting the residuals.

    Filter ``1 - (c / (d + c))^s`` after s ridge fits, ``c = alpha / K``.

    Parameters
    ----------
    alpha : float, default=1.0
        The base learner's ``KernelRidge`` alpha (a weak learner has a large alpha).
    n_steps : int or "auto", default="auto"
        Number of ridge fits, or ``"auto"``: choose among 1..max_steps by ``selection``.
    max_steps : int, default=100
        Largest number of fits for ``n_steps="auto"``.
    kernel : str or callable, default="rbf"
        As in :class:`KernelSelfDistillation` (scikit-learn kernel names, ``"spline"``, a callable,
        ``"precomputed"``).
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How a grid's step is chosen (see :mod:`selfdistill.kernel.selection`).
    n_folds, holdout_fraction, random_state
        For ``selection="kfold"`` / ``"holdout"``, as in :class:`KernelSelfDistillation`.

    Attributes
    ----------
    path_ : FilterPath
        The filter per eigenvalue and step, dof per step, predictions.
    step_ : int
        Index of the step ``predict`` uses (the given value, or the chosen one).
    selection_ : SelectionResult or None
        The criterion per step and the choice (None without a grid).
    dof_ : float
        ``tr h`` of the step used.
    X_fit_ : ndarray
        Training inputs (the kernel's second argument).

    See Also
    --------
    selfdistill.kernel.filter_estimators.SpectralFilterRegressor : ``fit``, ``predict``, ``staged_predict``.
    """

    def __init__(
        self, alpha: float = 1.0, n_steps: Any = "auto", *, max_steps: int = 100, kernel: Any = "rbf",
        gamma: float | None = None, degree: float = 3, coef0: float = 1, kernel_params: dict | None = None,
        selection: str = "gcv", n_folds: int = 5, holdout_fraction: float = 0.2, random_state: Any = None,
    ) -> None:  # fmt: skip
        self.alpha, self.n_steps, self.max_steps = alpha, n_steps, max_steps
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0
        self.kernel_params, self.selection, self.n_folds = kernel_params, selection, n_folds
        self.holdout_fraction, self.random_state = holdout_fraction, random_state

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:
        if _is_auto(self.n_steps):
            return int(self.max_steps), True
        return self.n_steps, False

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:
        n = int(np.max(grid))
        return boosting_path(spectrum, y, self.alpha, n_steps=n)


class KernelGradientDescent(SpectralFilterRegressor):
    """Gradient descent in the RKHS on ``(1/2K) sum (f(x_k) - y_k)^2`` from f = 0, stopped after n_steps.

    Filter ``1 - (1 - eta d)^t`` after t steps.

    Parameters
    ----------
    n_steps : int, sequence of int or "auto", default="auto"
        A number of steps, a grid to choose from, or ``"auto"``: about 40 log-spaced counts in
        1..max_steps, chosen by ``selection``.
    step_size : float or None, default=None
        eta in G-units (``G = Kxx / K``), default ``1 / d_max``; must be below ``2 / d_max``.
    max_steps : int, default=10000
        Largest count of the ``"auto"`` grid.
    kernel : str or callable, default="rbf"
        As in :class:`KernelSelfDistillation` (scikit-learn kernel names, ``"spline"``, a callable,
        ``"precomputed"``).
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How a grid's step is chosen (see :mod:`selfdistill.kernel.selection`).
    n_folds, holdout_fraction, random_state
        For ``selection="kfold"`` / ``"holdout"``, as in :class:`KernelSelfDistillation`.

    Attributes
    ----------
    path_ : FilterPath
        The filter per eigenvalue and step, dof per step, predictions.
    step_ : int
        Index of the step ``predict`` uses (the given value, or the chosen one).
    selection_ : SelectionResult or None
        The criterion per step and the choice (None without a grid).
    dof_ : float
        ``tr h`` of the step used.
    X_fit_ : ndarray
        Training inputs (the kernel's second argument).

    See Also
    --------
    selfdistill.kernel.filter_estimators.SpectralFilterRegressor : ``fit``, ``predict``, ``staged_predict``.
    """

    def __init__(
        self, n_steps: Any = "auto", *, step_size: float | None = None, max_steps: int = 10000,
        kernel: Any = "rbf", gamma: float | None = None, degree: float = 3, coef0: float = 1,
        kernel_params: dict | None = None, selection: str = "gcv", n_folds: int = 5,
        holdout_fraction: float = 0.2, random_state: Any = None,
    ) -> None:  # fmt: skip
        self.n_steps, self.step_size, self.max_steps = n_steps, step_size, max_steps
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0
        self.kernel_params, self.selection, self.n_folds = kernel_params, selection, n_folds
        self.holdout_fraction, self.random_state = holdout_fraction, random_state

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:
        return _grid_or_value(self.n_steps, "n_steps", geometric_steps(int(self.max_steps), AUTO_GRID_SIZE))

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:
        return gradient_descent_path(spectrum, y, grid, step_size=self.step_size)


class KernelGradientFlow(SpectralFilterRegressor):
    """Gradient flow ``df/ds = G (y - f)`` from f = 0, stopped at time s (G-units): filter ``1 - exp(-s d)``.

    Parameters
    ----------
    time : float, sequence of float or "auto", default="auto"
        A time, a grid to choose from, or ``"auto"``: 40 log-spaced times from ``0.1 / d_max`` to
        ``1e8 / d_max``.
    kernel : str or callable, default="rbf"
        As in :class:`KernelSelfDistillation` (scikit-learn kernel names, ``"spline"``, a callable,
        ``"precomputed"``).
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How a grid's step is chosen (see :mod:`selfdistill.kernel.selection`).
    n_folds, holdout_fraction, random_state
        For ``selection="kfold"`` / ``"holdout"``, as in :class:`KernelSelfDistillation`.

    Attributes
    ----------
    path_ : FilterPath
        The filter per eigenvalue and step, dof per step, predictions.
    step_ : int
        Index of the step ``predict`` uses (the given value, or the chosen one).
    selection_ : SelectionResult or None
        The criterion per step and the choice (None without a grid).
    dof_ : float
        ``tr h`` of the step used.
    X_fit_ : ndarray
        Training inputs (the kernel's second argument).

    See Also
    --------
    selfdistill.kernel.filter_estimators.SpectralFilterRegressor : ``fit``, ``predict``, ``staged_predict``.
    """

    def __init__(
        self, time: Any = "auto", *, kernel: Any = "rbf", gamma: float | None = None, degree: float = 3,
        coef0: float = 1, kernel_params: dict | None = None, selection: str = "gcv", n_folds: int = 5,
        holdout_fraction: float = 0.2, random_state: Any = None,
    ) -> None:  # fmt: skip
        self.time = time
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0
        self.kernel_params, self.selection, self.n_folds = kernel_params, selection, n_folds
        self.holdout_fraction, self.random_state = holdout_fraction, random_state

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:
        d_max = max(float(spectrum.eigenvalues[-1]), np.finfo(float).tiny)
        return _grid_or_value(self.time, "time", np.geomspace(0.1, 1e8, AUTO_GRID_SIZE) / d_max)

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:
        return gradient_flow_path(spectrum, y, grid)


class SpectralCutoff(SpectralFilterRegressor):
    """Spectral cut-off (truncated kernel PCA regression): keep the n_components leading eigen-directions.

    Filter ``1{d >= tau}``, tau the n-th largest eigenvalue of G.

    Parameters
    ----------
    n_components : int, sequence of int or "auto", default="auto"
        A number of eigen-directions, a grid to choose from, or ``"auto"``: 1..rank of G, chosen by
        ``selection``.
    kernel : str or callable, default="rbf"
        As in :class:`KernelSelfDistillation` (scikit-learn kernel names, ``"spline"``, a callable,
        ``"precomputed"``).
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How a grid's step is chosen (see :mod:`selfdistill.kernel.selection`).
    n_folds, holdout_fraction, random_state
        For ``selection="kfold"`` / ``"holdout"``, as in :class:`KernelSelfDistillation`.

    Attributes
    ----------
    path_ : FilterPath
        The filter per eigenvalue and step, dof per step, predictions.
    step_ : int
        Index of the step ``predict`` uses (the given value, or the chosen one).
    selection_ : SelectionResult or None
        The criterion per step and the choice (None without a grid).
    dof_ : float
        ``tr h`` of the step used.
    X_fit_ : ndarray
        Training inputs (the kernel's second argument).

    See Also
    --------
    selfdistill.kernel.filter_estimators.SpectralFilterRegressor : ``fit``, ``predict``, ``staged_predict``.
    """

    def __init__(
        self, n_components: Any = "auto", *, kernel: Any = "rbf", gamma: float | None = None,
        degree: float = 3, coef0: float = 1, kernel_params: dict | None = None, selection: str = "gcv",
        n_folds: int = 5, holdout_fraction: float = 0.2, random_state: Any = None,
    ) -> None:  # fmt: skip
        self.n_components = n_components
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0
        self.kernel_params, self.selection, self.n_folds = kernel_params, selection, n_folds
        self.holdout_fraction, self.random_state = holdout_fraction, random_state

    def _grid(self, spectrum: Spectrum) -> tuple[Any, bool]:
        rank = max(int(np.count_nonzero(spectrum.eigenvalues > 0)), 1)
        return _grid_or_value(self.n_components, "n_components", np.arange(1, rank + 1, dtype=float))

    def _path(self, spectrum: Spectrum, y: np.ndarray, grid: Any) -> FilterPath:
        return cutoff_path(spectrum, y, grid)
