"""KernelSelfDistillation: the exact kernel self-distillation chain as a scikit-learn regressor."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from selfdistill.kernel.backends import (
    blocked_kernel_matrix,
    dtype_name,
    is_dask_array,
    is_torch_tensor,
    kernel_params,
    numpy_exact_spectrum,
    numpy_kernel_fn,
    resolve_backend,
    torch_exact_spectrum,
)
from selfdistill.kernel.kernels import kernel_matrix
from selfdistill.kernel.lowrank import LowRankSpectrum, infeasible_message, nystroem_spectrum, predict_rows
from selfdistill.kernel.mixing import check_xi
from selfdistill.kernel.result import ChainResult
from selfdistill.kernel.rounds import check_label_scale, self_distill
from selfdistill.kernel.selection import check_n_rounds, check_selection, select_chain_round
from selfdistill.kernel.spectrum import Spectrum

#: solver="exact": one eigendecomposition of the K x K matrix; "nystroem": the exact chain of a rank-m
#: Nystroem approximation (selfdistill.kernel.lowrank), O(m^2 + block) memory.
SOLVERS = ("exact", "nystroem")

#: epsilon=None uses eps = e_min + DEFAULT_RELATIVE_EPSILON * (||y||^2 / K - e_min), where e_min is the mean
#: square of the labels' part the kernel cannot fit (their null-space component; 0 for a full-rank kernel).
DEFAULT_RELATIVE_EPSILON = 0.1


#: check_estimator checks that KernelSelfDistillation(kernel="precomputed") fails by design, with reasons
#: (pass as check_estimator(..., expected_failed_checks=EXPECTED_FAILED_CHECKS_PRECOMPUTED)).
EXPECTED_FAILED_CHECKS_PRECOMPUTED = {
    "check_positive_only_tag_during_fit": (
        "feeds an arbitrary matrix with negative entries as the precomputed kernel; it is not positive "
        "semi-definite, so fit rejects it (a chain needs a valid kernel, eq. 17)"
    ),
    "check_estimators_dtypes": (
        "casts the precomputed kernel X X^T to int32/int64; the truncation makes it indefinite (most "
        "negative eigenvalue about -1% of the largest), which fit rejects"
    ),
}

#: check_estimator checks that KernelSelfDistillation(epsilon=eps) fails by design for a small fixed eps
#: (absolute eps of 0.01 or less with the default rbf kernel; see the class docstring), with reasons.
EXPECTED_FAILED_CHECKS_SMALL_EPSILON = {
    name: (
        "fits 80-100 points drawn around (100, 100) in 2-D: their rbf matrix (gamma = 1/n_features) is "
        "numerically singular, and the N(0, 1) labels' component in its null space alone has a mean square "
        "above eps, so no fit reaches eq. (1) and fit raises ValueError ('infeasible', naming the smallest "
        "feasible epsilon)"
    )
    for name in ("check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in")
}


def nonfinite_rows(array: np.ndarray) -> tuple[int, str] | None:
    """(number of NaN/inf values, the first rows holding them as text "3, 7, ...") or None if all finite."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    rows = np.unique(np.nonzero(bad)[0])
    return int(bad.sum()), ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")


def _require_finite(name: str, value: Any) -> int | None:
    """One-line error for NaN / inf in a numeric array (scikit-learn's own message is a paragraph).
    Returns the number of samples (rows), or None for input left to validate_data (non-numeric, sparse)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return None
    if arr.dtype.kind not in "biuf" or arr.ndim == 0:
        return None
    found = nonfinite_rows(arr)
    if found is not None:
        raise ValueError(
            f"{name} contains {found[0]} NaN or infinite value(s) (rows {found[1]}, 0-based); remove "
            "those samples or impute the values"
        )
    return int(arr.shape[0])


class CollapseWarning(UserWarning):
    """The chain collapsed at round 0: ||y||^2 <= K eps, the solution is f = 0."""


class KernelSelfDistillation(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Exact multi-round kernel self-distillation (Mobahi, Farajtabar, Bartlett 2020), scikit-learn API.

    Round 0 solves ``min R(f)`` subject to ``(1/K) sum_k (f(x_k) - y_k)^2 <= eps`` (eq. 1); round t refits
    the training predictions of round t-1. One eigendecomposition of ``G = Kxx / K`` serves every round.

    Parameters
    ----------
    kernel : str or callable, default="rbf"
        Any scikit-learn pairwise kernel name, ``"spline"`` (the Green's function (59), 1-D inputs in
        [0, 1]), a callable, or ``"precomputed"``: ``fit`` then takes the RAW matrix ``[g(x_j, x_k)]`` (no
        1/K) and ``predict`` takes ``[g(x_test, x_train)]``.
    epsilon : float or None, default=None
        The constraint ``eps > 0``. None means ``eps = e_min + 0.1 (||y||^2 / K - e_min)``: 10% of the label
        energy the kernel can fit, on top of ``e_min``, the mean square of the labels' component in the null
        space of a singular kernel matrix (which no fit can reduce; ``e_min = 0`` for a full-rank kernel,
        then ``eps = 0.1 mean(y^2)``). This default is always feasible and never collapses at round 0
        (unless the kernel can fit nothing of y).
    epsilon_mode : {"absolute", "relative"}, default="absolute"
        ``"absolute"``: ``eps = epsilon``, the paper's convention. ``"relative"``:
        ``eps = epsilon * ||y||^2 / K``, i.e. ``epsilon * mean(y^2)`` for one output (summed over outputs
        with a shared c, per column with ``per_output_c=True``). ``epsilon >= 1`` relative always collapses
        at round 0.
    n_rounds : int, None or "auto", default=None
        Number of rounds to fit (round 0 included). None: until collapse (at most ``max_rounds``).
        ``"auto"``: fit until collapse, then choose the round by ``selection`` (no test set): ``predict``
        uses the chosen round, ``n_rounds_`` counts the rounds up to and including it, ``selection_`` holds
        the criterion per round and ``full_result_`` the whole chain.
    alpha : float or None, default=None
        Fixed-c mode: every round is ``KernelRidge(alpha)`` on the previous round's predictions
        (``c = alpha / K``); ``epsilon`` then only detects collapse. With ``epsilon=None`` and ``n_rounds``
        given there is no collapse test: exactly ``n_rounds`` rounds are fitted (``epsilon_`` is None); with
        ``n_rounds=None`` the default epsilon stops the chain.
    per_output_c : bool, default=False
        Multi-output labels share one c per round by default (the constraint is on the sum over outputs);
        True gives each output column its own c.
    gamma, degree, coef0, kernel_params
        Kernel parameters, as in ``sklearn.kernel_ridge.KernelRidge``.
    max_rounds : int, default=1000
        Cap on the number of rounds for ``n_rounds=None`` (and ``"auto"``).
    xi : float or sequence of float, default=1.0
        Ground-truth mixing (Borup & Andersen 2021): round t >= 1 fits ``xi * f_{t-1}(X) + (1 - xi) * y``.
        1 is the paper; a sequence gives one xi per round t >= 1. With ``alpha`` and ``xi < 1`` the rounds
        converge to ``KernelRidge(alpha / (1 - xi))``; a chain run until collapse stops when they converge.
    selection : {"gcv", "holdout", "kfold"}, default="gcv"
        How ``n_rounds="auto"`` chooses the round: ``"gcv"`` is generalized cross-validation from
        ``tr B_t``, without refits; ``"holdout"`` and ``"kfold"`` refit the chain, with its own c_t, on the
        training part and score each round on the held-out part. See :mod:`selfdistill.kernel.selection`.
    n_folds : int, default=5
        Folds for ``selection="kfold"`` (shuffled).
    holdout_fraction : float, default=0.2
        Share of the training data held out for ``selection="holdout"``.
    random_state : int, RandomState or None, default=None
        Seed for the shuffled splits of ``selection="kfold"`` / ``"holdout"`` and for the choice of the
        Nystroem centres (``solver="nystroem"``).
    solver : {"exact", "nystroem"}, default="exact"
        ``"exact"``: the K x K kernel matrix and one eigendecomposition (a size guard refuses, in one line,
        a K whose matrices do not fit in memory: :class:`KernelSizeError`). ``"nystroem"``: the exact chain
        of the rank-m Nystroem approximation ``k(x, C) K_mm^+ k(C, x')`` with ``m = n_components`` centres;
        one pass over X in row blocks, ``O(m^2 + block)`` memory, rounds on O(m) numbers; X may be a
        ``dask.array`` (the pass then runs on Dask). With every training point a centre it is the exact
        route.
    n_components : int or None, default=None
        m, the number of Nystroem centres (required with ``solver="nystroem"``).
    center_selection : {"uniform", "leverage"}, default="uniform"
        How the Nystroem centres are drawn: uniformly, or by approximate ridge leverage scores from a
        uniform sketch of m points (:func:`selfdistill.kernel.lowrank.leverage_scores`).
    backend : {"auto", "numpy", "torch"}, default="auto"
        Exact route only. ``"auto"``: ``"torch"`` for a ``torch.Tensor`` X or a given ``device``, else
        ``"numpy"``. ``"numpy"``: SciPy's eigh; ``"torch"``: ``torch.linalg.eigh``, CPU or CUDA.
    device : str, torch.device or None, default=None
        Torch device for ``backend="torch"`` (default: X's device, the CPU for NumPy input).
    dtype : {"float64", "float32"} or None, default=None
        Floating type of the exact route's kernel matrix and eigendecomposition (default: float64, or a
        torch tensor X's floating dtype). Rounds and predictions run in float64.

    Attributes
    ----------
    result_ : ChainResult
        The fitted chain: per-round table, ``B_t``, plots, JSON, ``theory()``. With ``solver="nystroem"``
        its spectrum is that of the approximated kernel (r positive eigenvalues, plus one 0 standing for its
        null space) and it holds no eigenvectors: predict through the estimator.
    c_ : ndarray of shape (T,) or (T, n_outputs)
        c_t of the T = ``n_rounds_`` rounds (the second shape with ``per_output_c``), in the paper's
        convention ``G = Kxx / K`` (scikit-learn's ``alpha = K c``).
    n_rounds_ : int
        Number of non-collapsed rounds fitted (0 if the chain collapsed at round 0: ``predict`` then returns
        0); with ``n_rounds="auto"`` the chosen round + 1.
    selection_ : SelectionResult or None
        With ``n_rounds="auto"``: the criterion per round and the choice (prints, plots, saves); else None.
    full_result_ : ChainResult
        The whole chain before the choice of the round (equals ``result_`` unless ``n_rounds="auto"``).
    epsilon_ : float, ndarray or None
        The absolute eps used (None: fixed-c mode without a collapse test).
    X_fit_ : ndarray of shape (n_samples, n_features) or None
        Training inputs (the kernel's second argument); None with ``solver="nystroem"``.
    centers_ : ndarray of shape (m, n_features) or None
        The Nystroem centres (None with ``solver="exact"``).
    center_coefs_ : ndarray of shape (T, m, n_outputs) or None
        Per round, ``f_t(x) = k(x, centers_) @ center_coefs_[t]`` (``solver="nystroem"``; None otherwise).

    See Also
    --------
    self_distill : the engine on a kernel matrix or a Spectrum.
    SpectralRidge, KernelBoosting, KernelGradientDescent, SpectralCutoff : the other spectral filters.

    Notes
    -----
    Behaviour by design: if ``eps >= ||y||^2 / K`` the chain collapses at round 0; ``fit`` then warns
    (:class:`CollapseWarning`) and the model predicts 0 (that IS the solution of eq. 1). If the labels'
    component in the null space of a singular kernel matrix alone exceeds eps, no fit reaches the
    constraint: ``fit`` raises ValueError naming the smallest feasible epsilon.

    scikit-learn's ``check_estimator`` passes with one tag: ``regressor_tags.poor_score`` is True because
    with ``n_rounds=None`` the last round (what ``predict`` uses) is, by design, the most regularized model
    before collapse, whose R^2 on the training data can be below the 0.5 the generic check expects.

    With ``kernel="precomputed"`` two checks fail by design (``EXPECTED_FAILED_CHECKS_PRECOMPUTED``):
    ``check_positive_only_tag_during_fit`` and ``check_estimators_dtypes`` (its integer-cast variant) pass
    kernel matrices that are not positive semi-definite, which ``fit`` rejects with a ValueError naming the
    most negative eigenvalue relative to the largest.

    With a fixed ``epsilon`` fit is exactly as feasible as eq. (1): it raises ValueError ("infeasible")
    when eps is at or below ``e_min``, the mean square of the labels' component in the null space of the
    kernel matrix (eigenvalues of G at most ``K * machine-eps * d_max``). Three checks
    (``check_fit_idempotent``, ``check_fit_check_is_fitted``, ``check_n_features_in``) fit points whose
    default rbf matrix is numerically singular; their ``e_min`` is set by round-off-sized eigenvalues
    (between about 0.01 and 0.2, depending on floating-point details). So
    ``check_estimator(KernelSelfDistillation(epsilon=eps))`` passes for an absolute eps of 0.2 or more (and
    for the default ``epsilon=None``, feasible for every kernel), and for eps of 0.01 or less fails exactly
    those three (``EXPECTED_FAILED_CHECKS_SMALL_EPSILON``, with reasons); in between, a subset of them.
    A low-rank kernel (e.g. polynomial) with a small fixed eps fails more checks, for the same reason.

    Examples
    --------
    >>> import numpy as np
    >>> from selfdistill.kernel import KernelSelfDistillation
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, size=(80, 2))
    >>> y = np.sin(3 * X[:, 0]) + 0.1 * rng.standard_normal(80)
    >>> est = KernelSelfDistillation("rbf", gamma=2.0, epsilon=0.05, epsilon_mode="relative").fit(X, y)
    >>> est.n_rounds_ >= 1
    True
    >>> auto = KernelSelfDistillation("rbf", gamma=2.0, n_rounds="auto", selection="gcv").fit(X, y)
    >>> auto.selection_.chosen + 1 == auto.n_rounds_
    True
    """

    def __init__(
        self,
        kernel: Any = "rbf",
        epsilon: float | None = None,
        *,
        epsilon_mode: str = "absolute",
        n_rounds: int | None = None,
        alpha: float | None = None,
        per_output_c: bool = False,
        gamma: float | None = None,
        degree: float = 3,
        coef0: float = 1,
        kernel_params: dict | None = None,
        max_rounds: int = 1000,
        xi: float | Any = 1.0,
        selection: str = "gcv",
        n_folds: int = 5,
        holdout_fraction: float = 0.2,
        random_state: Any = None,
        solver: str = "exact",
        n_components: int | None = None,
        center_selection: str = "uniform",
        backend: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        self.kernel = kernel
        self.epsilon = epsilon
        self.epsilon_mode = epsilon_mode
        self.n_rounds = n_rounds
        self.alpha = alpha
        self.per_output_c = per_output_c
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.max_rounds = max_rounds
        self.xi = xi
        self.selection = selection
        self.n_folds = n_folds
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state
        self.solver = solver
        self.n_components = n_components
        self.center_selection = center_selection
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = isinstance(self.kernel, str) and self.kernel == "precomputed"
        tags.regressor_tags.poor_score = True  # see the class docstring
        return tags

    def _kernel(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        if not (isinstance(self.kernel, str) and self.kernel == "precomputed"):
            return blocked_kernel_matrix(self._kernel_fn(), X, Y)  # row blocks: see kernel/memory.py
        return kernel_matrix(
            X,
            Y,
            self.kernel,
            gamma=self.gamma,
            degree=self.degree,
            coef0=self.coef0,
            kernel_params=self.kernel_params,
        )

    def _kernel_fn(self):
        return numpy_kernel_fn(self.kernel, self.gamma, self.degree, self.coef0, self.kernel_params)

    def _spectrum(self, X_given: Any, X: Any, Y: np.ndarray) -> Spectrum:
        """The route's spectrum: exact (NumPy or torch backend) or Nystroem (selfdistill.kernel.lowrank)."""
        precomputed = isinstance(self.kernel, str) and self.kernel == "precomputed"
        if self.solver == "nystroem":
            if precomputed:
                raise ValueError("solver='nystroem' needs the inputs X, not kernel='precomputed'")
            if self.backend == "torch" or self.device is not None:
                raise ValueError(
                    "backend='torch' and device are for solver='exact'; the Nystroem route runs on NumPy "
                    "or Dask"
                )
            m = self.n_components
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ValueError(
                    f"n_components={m!r}: solver='nystroem' needs n_components=m, a positive integer number "
                    "of centres (e.g. 1000)"
                )
            if m > X.shape[0]:
                warnings.warn(
                    f"n_components={m} > n_samples={X.shape[0]}: using every training point as a centre "
                    "(the exact route's chain)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                m = X.shape[0]
            return nystroem_spectrum(
                X,
                Y,
                self._kernel_fn(),
                int(m),
                center_selection=self.center_selection,
                random_state=self.random_state,
            )
        backend = resolve_backend(self.backend, X_given, self.device)
        dtype = dtype_name(self.dtype)
        if backend == "torch":
            return torch_exact_spectrum(
                X_given if is_torch_tensor(X_given) else X,
                self.kernel,
                kernel_fn=self._kernel_fn(),
                params=kernel_params(self.kernel, self.gamma, self.degree, self.coef0, self.kernel_params),
                precomputed=precomputed,
                device=self.device,
                dtype=dtype,
            )
        return numpy_exact_spectrum(X, self._kernel_fn(), precomputed=precomputed, dtype=dtype or "float64")

    def _validate_array_input(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        """Training data given as a dask.array or a torch tensor: (X for the route, y as NumPy)."""
        if is_torch_tensor(y):
            y = y.detach().cpu().numpy()
        elif is_dask_array(y):
            y = y.compute()
        precomputed = isinstance(self.kernel, str) and self.kernel == "precomputed"
        if is_torch_tensor(X) and not precomputed:
            X_host, y = validate_data(
                self, X.detach().cpu().numpy(), y, multi_output=True, y_numeric=True, dtype=np.float64
            )
            _require_finite("X", X_host)
            return X_host, y
        if is_dask_array(X) and self.solver != "nystroem":
            raise ValueError(
                "a dask.array X needs solver='nystroem' (the exact route holds the K x K matrix in one "
                "memory)"
            )
        if len(X.shape) != 2 or (precomputed and X.shape[0] != X.shape[1]):
            raise ValueError(f"X must be 2-D (square with kernel='precomputed'), got shape {tuple(X.shape)}")
        n_y = _require_finite("y", y)
        if n_y is not None and n_y != X.shape[0]:
            raise ValueError(
                f"inconsistent numbers of samples: X has {X.shape[0]} rows but y has {n_y}; give one label "
                "(row of y) per sample of X"
            )
        y = np.asarray(y, dtype=np.float64)
        self.n_features_in_ = int(X.shape[1])
        return X, y

    def _absolute_epsilon(self, Y: np.ndarray, spectrum: Spectrum) -> float | np.ndarray | None:
        if self.epsilon_mode not in ("absolute", "relative"):
            raise ValueError(f"epsilon_mode={self.epsilon_mode!r} must be 'absolute' or 'relative'")
        if self.alpha is not None and self.epsilon is None and self.n_rounds not in (None, "auto"):
            return None  # fixed c, fixed number of rounds: exactly n_rounds ridge refits, no collapse test
        relative = self.epsilon is None or self.epsilon_mode == "relative"
        value = DEFAULT_RELATIVE_EPSILON if self.epsilon is None else self.epsilon
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"epsilon={self.epsilon!r} must be a number > 0 or None") from None
        if not np.isfinite(value) or value <= 0.0:
            raise ValueError(
                f"epsilon={self.epsilon!r} must be a finite number > 0 (the allowed mean squared training "
                "residual); use e.g. epsilon=0.1 with epsilon_mode='relative'"
            )
        if not relative:
            return value
        K = Y.shape[0]
        energy = np.sum(Y * Y, axis=0) / K
        if self.epsilon is None:  # the default: relative to what the kernel can fit
            unreachable = np.sum(spectrum.rotate(Y)[spectrum.null_mask] ** 2, axis=0) / K
        else:
            unreachable = np.zeros_like(energy)
        if not self.per_output_c:
            energy, unreachable = np.array([energy.sum()]), np.array([unreachable.sum()])
        eps = unreachable + value * (energy - unreachable)
        eps = np.where(eps > 0.0, eps, value)  # all-zero labels: any eps > 0 collapses at round 0
        return float(eps[0]) if eps.size == 1 else eps

    def fit(self, X: Any, y: Any) -> KernelSelfDistillation:
        """Fit the chain.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, n_samples)
            Training inputs, or the raw matrix ``[g(x_j, x_k)]`` with ``kernel="precomputed"``. A torch
            tensor (the exact route then runs on torch) or a ``dask.array`` (``solver="nystroem"``) as well.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Labels; one regression per output column.

        Returns
        -------
        KernelSelfDistillation
            The fitted estimator (``self``).
        """
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} must be one of {SOLVERS}")
        if check_n_rounds(self.n_rounds) == "auto":
            check_selection(self.selection, self.n_folds, self.holdout_fraction)
        check_xi(self.xi)
        X_given = X
        if is_dask_array(X) or is_torch_tensor(X):
            X, y = self._validate_array_input(X, y)
            return self._fit_validated(X_given, X, y)
        n_X = _require_finite("X", X)
        n_y = _require_finite("y", y)
        if n_X is not None and n_y is not None and n_X != n_y:
            raise ValueError(
                f"inconsistent numbers of samples: X has {n_X} rows but y has {n_y}; give one label (row of "
                "y) per sample of X"
            )
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if isinstance(self.kernel, str) and self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise ValueError(
                f"kernel='precomputed': X must be the square training kernel matrix [g(x_j, x_k)], got shape "
                f"{X.shape}"
            )
        return self._fit_validated(X_given, X, y)

    def _fit_validated(self, X_given: Any, X: Any, y: np.ndarray) -> KernelSelfDistillation:
        n_rounds = check_n_rounds(self.n_rounds)
        auto = n_rounds == "auto"
        check_label_scale(y)  # before the default epsilon, a multiple of ||y||^2 / K, becomes inf
        Y = y.reshape(y.shape[0], -1)
        spectrum = self._spectrum(X_given, X, Y)
        self.epsilon_ = self._absolute_epsilon(Y, spectrum)
        result = self_distill(
            spectrum,
            y,
            self.epsilon_,
            n_rounds=None if auto else n_rounds,
            alpha=self.alpha,
            per_output_c=self.per_output_c,
            max_rounds=self.max_rounds,
            xi=self.xi,
        )
        if result.infeasible:
            if isinstance(spectrum, LowRankSpectrum):
                relative = self.epsilon is not None and self.epsilon_mode == "relative"
                raise ValueError(infeasible_message(spectrum, self.epsilon_, self.per_output_c, relative))
            raise ValueError(result.message)
        if result.n_rounds == 0:
            warnings.warn(
                f"the chain collapsed at round 0: ||y||^2/K = {result.mean_square_labels[0]:.4g} <= epsilon="
                f"{np.max(self.epsilon_):.4g}, so the solution is f = 0 and predict returns zeros; use a "
                "smaller epsilon (e.g. epsilon_mode='relative' with epsilon < 1)",
                CollapseWarning,
                stacklevel=2,
            )
        self.full_result_: ChainResult = result
        self.selection_ = None
        if auto and result.n_rounds > 0:
            result, self.selection_ = select_chain_round(self, X, y, spectrum, result)
        self.result_: ChainResult = result
        self.c_ = np.array(result.c, dtype=float)
        self.n_rounds_ = result.n_rounds
        nystroem = isinstance(spectrum, LowRankSpectrum)
        self.X_fit_ = None if nystroem else X
        self.centers_ = spectrum.centers if nystroem else None
        self.center_coefs_ = spectrum.center_coefficients(result.c, result.z) if nystroem else None
        if nystroem:
            result.timings.update(spectrum.timings)
        return self

    def _test_kernel(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        if is_torch_tensor(X):
            X = X.detach().cpu().numpy()
        _require_finite("X", X)
        precomputed = isinstance(self.kernel, str) and self.kernel == "precomputed"
        shape = np.asarray(X).shape
        if precomputed and len(shape) == 2 and shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                "features as input: with kernel='precomputed', X must be the raw test-by-train matrix "
                f"[g(x_test, x_train)] of shape (n_test, {self.n_features_in_}), one column per training "
                "point"
            )
        X = validate_data(self, X, reset=False, dtype=np.float64)
        if precomputed:
            return X
        return self._kernel(X, self.X_fit_)

    def predict(self, X: Any, round: int | None = None) -> np.ndarray:
        """Predictions of the last fitted round (the chosen one with ``n_rounds="auto"``), or of ``round``.

        Parameters
        ----------
        X : array-like of shape (n_test, n_features) or (n_test, n_samples)
            Inputs, or the raw test-by-train matrix ``[g(x_test, x_train)]`` with ``kernel="precomputed"``.
        round : int or None, default=None
            0-based round; negative values count from the end.

        Returns
        -------
        ndarray of shape (n_test,) or (n_test, n_outputs)
            With ``solver="nystroem"`` and a ``dask.array`` X: a lazy ``dask.array``.
        """
        if getattr(self, "centers_", None) is not None:
            return self._nystroem_predict(X, [round])[0]
        kernel_test_train = self._test_kernel(X)
        return self.result_.predict(kernel_test_train, round=round)

    def staged_predict(self, X: Any) -> Iterator[np.ndarray]:
        """Predictions of every fitted round, round 0 first (one zero array if collapsed at round 0).

        Parameters
        ----------
        X : array-like of shape (n_test, n_features) or (n_test, n_samples)
            As for :meth:`predict`.

        Yields
        ------
        ndarray of shape (n_test,) or (n_test, n_outputs)
            The predictions of round 0, 1, ..., ``n_rounds_ - 1``.
        """
        if getattr(self, "centers_", None) is not None:
            yield from self._nystroem_predict(X, list(range(max(self.n_rounds_, 1))))
            return
        kernel_test_train = self._test_kernel(X)
        yield from self.result_.staged_predict(kernel_test_train)

    def _nystroem_predict(self, X: Any, rounds: list[int | None]) -> list[Any]:
        """f_t(x) = k(x, centers_) @ center_coefs_[t] for each requested round (solver='nystroem')."""
        check_is_fitted(self)
        if is_torch_tensor(X):
            X = X.detach().cpu().numpy()
        if is_dask_array(X):
            if len(X.shape) != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has shape {X.shape}, but {type(self).__name__} is expecting {self.n_features_in_} "
                    "features"
                )
        else:
            _require_finite("X", X)
            X = validate_data(self, X, reset=False, dtype=np.float64)
        single = self.result_.labels.ndim == 1
        if self.n_rounds_ == 0:  # collapsed at round 0: f = 0
            zeros = np.zeros((X.shape[0], self.result_.n_outputs))
            return [zeros[:, 0] if single else zeros for _ in rounds]
        out = []
        for round in rounds:
            t = self.result_._check_round(round)
            pred = predict_rows(X, self.centers_, self.center_coefs_[t], self._kernel_fn())
            out.append(pred[:, 0] if single else pred)
        return out
