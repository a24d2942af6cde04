"""Exact multi-round kernel self-distillation (Mobahi, Farajtabar, Bartlett 2020). NumPy/SciPy only.

Main entry points:
  - ``self_distill(gram, y, epsilon, ...) -> ChainResult``: the engine (one eigendecomposition, then
    each round is a scalar root-find on O(K) work).
  - ``KernelSelfDistillation``: the scikit-learn estimator.
  - ``Spectrum``: reuse one eigendecomposition for many epsilons.
  - ``kernel_matrix``, ``spline_green``: kernels by name, including the spline Green's function (59).
  - ``nystroem_spectrum`` / ``LowRankSpectrum``: the exact chain of a rank-m Nystroem approximation
    (``KernelSelfDistillation(solver="nystroem")``), also on a dask.array; ``KernelSizeError``: the exact
    route's size guard. The torch backend (``backend="torch"``) and Dask are imported only when used.
"""

from selfdistill.kernel.estimator import CollapseWarning, KernelSelfDistillation
from selfdistill.kernel.kernels import KERNEL_NAMES, kernel_matrix, spline_green
from selfdistill.kernel.lowrank import LowRankSpectrum, nystroem_spectrum
from selfdistill.kernel.memory import KernelSizeError
from selfdistill.kernel.result import ChainResult
from selfdistill.kernel.rounds import constraint_residual, self_distill, solve_c
from selfdistill.kernel.spectrum import Spectrum

__all__ = [
    "KERNEL_NAMES",
    "ChainResult",
    "CollapseWarning",
    "KernelSelfDistillation",
    "KernelSizeError",
    "LowRankSpectrum",
    "Spectrum",
    "constraint_residual",
    "kernel_matrix",
    "nystroem_spectrum",
    "self_distill",
    "solve_c",
    "spline_green",
]
