"""Exact multi-round kernel self-distillation (Mobahi, Farajtabar, Bartlett 2020). NumPy/SciPy only.

Main entry points:
  - ``self_distill(gram, y, epsilon, ...) -> ChainResult``: the engine (one eigendecomposition, then
    each round is a scalar root-find on O(K) work).
  - ``KernelSelfDistillation``: the scikit-learn estimator.
  - ``Spectrum``: reuse one eigendecomposition for many epsilons.
  - ``kernel_matrix``, ``spline_green``: kernels by name, including the spline Green's function (59).
  - ``FilterPath`` and ``ridge_path``, ``boosting_path``, ``gradient_descent_path``, ``gradient_flow_path``,
    ``cutoff_path``, ``self_distillation_path``: every method as a spectral filter over one ``Spectrum``;
    ``SpectralRidge``, ``KernelBoosting``, ``KernelGradientDescent``, ``KernelGradientFlow``,
    ``SpectralCutoff``: their scikit-learn estimators (filters.py, filter_estimators.py).
  - ``self_distill(..., xi=...)``, ``MixedChainResult``: ground-truth mixing (mixing.py).
  - ``KernelSelfDistillation(n_rounds="auto", selection="gcv")``, ``SelectionResult``: choosing the round
    without the test set (selection.py).
  - ``nystroem_spectrum`` / ``LowRankSpectrum``: the exact chain of a rank-m Nystroem approximation
    (``KernelSelfDistillation(solver="nystroem")``), also on a dask.array; ``KernelSizeError``: the exact
    route's size guard. The torch backend (``backend="torch"``) and Dask are imported only when used.
"""

from selfdistill.kernel.estimator import CollapseWarning, KernelSelfDistillation
from selfdistill.kernel.filter_estimators import (
    KernelBoosting,
    KernelGradientDescent,
    KernelGradientFlow,
    SpectralCutoff,
    SpectralRidge,
)
from selfdistill.kernel.filters import (
    FilterPath,
    boosting_path,
    cutoff_path,
    gradient_descent_path,
    gradient_flow_path,
    ridge_path,
    self_distillation_path,
)
from selfdistill.kernel.kernels import KERNEL_NAMES, kernel_matrix, spline_green
from selfdistill.kernel.lowrank import LowRankSpectrum, nystroem_spectrum
from selfdistill.kernel.memory import KernelSizeError
from selfdistill.kernel.mixing import MixedChainResult
from selfdistill.kernel.result import ChainResult
from selfdistill.kernel.rounds import constraint_residual, self_distill, solve_c
from selfdistill.kernel.selection import SelectionResult
from selfdistill.kernel.spectrum import Spectrum

__all__ = [
    "KERNEL_NAMES",
    "ChainResult",
    "CollapseWarning",
    "FilterPath",
    "KernelBoosting",
    "KernelGradientDescent",
    "KernelGradientFlow",
    "KernelSelfDistillation",
    "MixedChainResult",
    "SelectionResult",
    "SpectralCutoff",
    "SpectralRidge",
    "KernelSizeError",
    "LowRankSpectrum",
    "Spectrum",
    "boosting_path",
    "constraint_residual",
    "cutoff_path",
    "gradient_descent_path",
    "gradient_flow_path",
    "kernel_matrix",
    "ridge_path",
    "nystroem_spectrum",
    "self_distill",
    "self_distillation_path",
    "solve_c",
    "spline_green",
]
