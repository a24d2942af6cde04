"""The exact route's backends: NumPy/SciPy (default) and PyTorch (CPU or CUDA, float32 or float64).

Both build the RAW kernel matrix [g(x_j, x_k)] in row blocks, check its memory first (the size guard of
selfdistill.kernel.memory), form G = gram / K in place and decompose it once; ``Spectrum.from_eigh``
applies the same validation and null-space tolerance to either eigensolver's output. The rounds that
follow are the same NumPy code for both (O(K) work each).

PyTorch is imported only when the torch backend is used (``import selfdistill.kernel`` never imports it).
On the torch backend the eigendecomposition runs in ``dtype`` on ``device`` (torch.linalg.eigh); the
eigenvalues and eigenvectors then come back to the host as float64 NumPy arrays for the rounds and
predictions. The kernel matrix is evaluated in float64 and stored in ``dtype``.

Agreement with the NumPy backend (tested on the CPU): float64, c_t to 1e-9 relative and predictions to
1e-8 of their largest value (round-off only: two LAPACK builds). float32 (either backend): eigenvalues
carry absolute errors of about 1.2e-7 d_max, so c_t moves by about 1.2e-7 d_max / c_t relative (tested:
1e-3 on well-conditioned problems; chains whose c_t approach 1e-5 d_max need float64), and eigenvalues
below 8 * 1.2e-7 * d_max count as zero (``spectrum.null_rtol``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from selfdistill.kernel.kernels import kernel_matrix
from selfdistill.kernel.memory import check_exact_route_fits, row_block
from selfdistill.kernel.spectrum import (
    EIGH_DTYPES,
    PSD_RTOL,
    SYMMETRY_RTOL,
    Spectrum,
    check_gram_statistics,
    null_rtol,
)

BACKENDS = ("auto", "numpy", "torch")
#: K x K matrices the NumPy route holds at its peak: G (formed in the kernel matrix's memory) and V
#: (scipy's default eigh driver, syevr, needs only O(K) workspace); a precomputed matrix is not ours to
#: overwrite, so G is one more.
NUMPY_COPIES = 2
NUMPY_COPIES_PRECOMPUTED = 3
#: K x K matrices of ``dtype`` on the torch device: G, the eigenvectors, and the divide-and-conquer
#: eigensolver's workspace (about 2 K^2 for syevd, on the CPU and in cuSOLVER alike).
TORCH_DEVICE_COPIES = 4
#: kernels evaluated natively in torch; others are evaluated by scikit-learn on the CPU and copied over.
TORCH_KERNELS = ("rbf", "laplacian", "linear", "polynomial", "poly", "sigmoid", "cosine")


def is_torch_tensor(X: Any) -> bool:
    """True for a torch.Tensor, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(X, torch.Tensor)


def is_dask_array(X: Any) -> bool:
    """True for a dask.array.Array, without importing dask."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def dtype_name(dtype: Any) -> str | None:
    """'float32' / 'float64' from a string, a NumPy dtype or a torch dtype (None stays None)."""
    if dtype is None:
        return None
    name = str(dtype).replace("torch.", "")
    try:
        name = np.dtype(name).name
    except TypeError:
        pass
    if name not in EIGH_DTYPES:
        raise ValueError(f"dtype={dtype!r} must be 'float32' or 'float64' (or the NumPy / torch equivalents)")
    return name


def resolve_backend(backend: str, X: Any, device: Any = None) -> str:
    """'numpy' or 'torch': backend='auto' picks torch for a torch.Tensor X or a given device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
    if backend == "auto":
        return "torch" if is_torch_tensor(X) or device is not None else "numpy"
    if backend == "numpy" and device is not None and str(device) != "cpu":
        raise ValueError(f"device={device!r} needs backend='torch' (the NumPy backend runs on the CPU)")
    return backend


def blocked_kernel_matrix(
    kernel_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    dtype: str = "float64",
    out: np.ndarray | None = None,
    budget: int | None = None,
) -> np.ndarray:
    """[g(x_i, y_j)] of shape (len(X), len(Y)) computed in row blocks of X (``kernel_fn(X_rows, Y)``).

    A result that fits in one block is one call (the same numbers as the unblocked kernel); larger ones
    never make one huge BLAS product (see selfdistill.kernel.memory for the OpenBLAS crash this avoids)."""
    Y = X if Y is None else Y
    n, m = len(X), len(Y)
    if out is None and row_block(m, 8, budget) >= n:
        return np.asarray(kernel_fn(X, Y), dtype=dtype)
    if out is None:
        out = np.empty((n, m), dtype=dtype)
    step = row_block(m, 8, budget)
    for start in range(0, n, step):
        out[start : start + step] = kernel_fn(X[start : start + step], Y)
    return out


def numpy_exact_spectrum(
    X: np.ndarray,
    kernel_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    precomputed: bool,
    dtype: str = "float64",
    symmetry_rtol: float = SYMMETRY_RTOL,
    psd_rtol: float = PSD_RTOL,
) -> Spectrum:
    """The exact route on NumPy/SciPy: size guard, blocked kernel matrix, in-place G, one eigh."""
    n = X.shape[0]
    itemsize = np.dtype(dtype).itemsize
    copies = NUMPY_COPIES_PRECOMPUTED if precomputed else NUMPY_COPIES
    check_exact_route_fits(n, copies=copies, itemsize=itemsize)
    gram = X if precomputed else blocked_kernel_matrix(kernel_fn, X, dtype=dtype)
    return Spectrum.from_gram(
        gram, symmetry_rtol=symmetry_rtol, psd_rtol=psd_rtol, overwrite_gram=not precomputed, dtype=dtype
    )


# ---- PyTorch ------------------------------------------------------------------------------------------


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ValueError(
            "backend='torch' needs PyTorch (pip install 'selfdistill[torch]'), or use backend='numpy'"
        ) from None
    return torch


def _torch_kernel_block(torch: Any, A: Any, B: Any, kernel: str, params: dict[str, Any]) -> Any:
    """[g(a_i, b_j)] in float64 on A's device, with scikit-learn's definitions and defaults."""
    gamma = params.get("gamma")
    if gamma is None:
        gamma = 1.0 / A.shape[1]
    if kernel == "rbf":
        sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
        return torch.exp(-gamma * sq.clamp_min_(0.0))
    if kernel == "laplacian":
        return torch.exp(-gamma * torch.cdist(A, B, p=1))
    if kernel == "linear":
        return A @ B.T
    if kernel in ("polynomial", "poly"):
        return (gamma * (A @ B.T) + params.get("coef0", 1)) ** params.get("degree", 3)
    if kernel == "sigmoid":
        return torch.tanh(gamma * (A @ B.T) + params.get("coef0", 1))
    if kernel == "cosine":
        an = A / A.norm(dim=1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
        bn = B / B.norm(dim=1, keepdim=True).clamp_min(torch.finfo(B.dtype).tiny)
        return an @ bn.T
    raise AssertionError(kernel)


def _device_free_bytes(torch: Any, device: Any) -> tuple[int | None, str]:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"{device} memory"
    return None, "memory"


def torch_exact_spectrum(
    X: Any,
    kernel: Any,
    *,
    kernel_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    params: dict[str, Any],
    precomputed: bool,
    device: Any = None,
    dtype: str | None = None,
    symmetry_rtol: float = SYMMETRY_RTOL,
    psd_rtol: float = PSD_RTOL,
) -> Spectrum:
    """The exact route on PyTorch: G built and decomposed (torch.linalg.eigh) on ``device`` in ``dtype``.

    X: inputs (or the raw kernel matrix when ``precomputed``) as a NumPy array or a torch tensor; device
    defaults to X's device (CPU for NumPy), dtype to X's floating dtype for a tensor, else float64.
    Kernels in TORCH_KERNELS run on the device; any other kernel (callables, chi2, spline) is evaluated
    by scikit-learn on the CPU, block by block, and copied to the device."""
    torch = _import_torch()
    with torch.no_grad():  # a tensor X that requires grad must not make an autograd graph of K x K blocks
        return _torch_exact_spectrum(
            torch, X, kernel, kernel_fn=kernel_fn, params=params, precomputed=precomputed, device=device,
            dtype=dtype, symmetry_rtol=symmetry_rtol, psd_rtol=psd_rtol,
        )  # fmt: skip


def _torch_exact_spectrum(
    torch: Any,
    X: Any,
    kernel: Any,
    *,
    kernel_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    params: dict[str, Any],
    precomputed: bool,
    device: Any,
    dtype: str | None,
    symmetry_rtol: float,
    psd_rtol: float,
) -> Spectrum:
    tensor_input = isinstance(X, torch.Tensor)
    if dtype is None:
        dtype = str(X.dtype).replace("torch.", "") if tensor_input and X.is_floating_point() else "float64"
        dtype = dtype if dtype in EIGH_DTYPES else "float64"
    dev = torch.device(device if device is not None else (X.device if tensor_input else "cpu"))
    tdtype = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=tdtype).element_size()
    n = int(X.shape[0])
    free, where = _device_free_bytes(torch, dev)
    copies = TORCH_DEVICE_COPIES + int(precomputed)  # a precomputed matrix stays besides G
    check_exact_route_fits(n, copies=copies, itemsize=itemsize, available=free, where=where)
    if dev.type != "cpu":  # the eigenvectors come back to the host (as float64: one more copy for float32)
        host_itemsize = 8 + (itemsize if dtype != "float64" else 0)
        check_exact_route_fits(n, copies=1, itemsize=host_itemsize, what="the eigenvectors on the host")

    X64 = torch.as_tensor(X, device=dev, dtype=torch.float64) if not precomputed else None
    G = torch.empty((n, n), dtype=tdtype, device=dev)
    step = row_block(n, 8)
    if precomputed:
        source = torch.as_tensor(X, device=dev)
        if source.ndim != 2 or source.shape[0] != source.shape[1]:
            raise ValueError(
                f"kernel='precomputed': X must be a square kernel matrix, got {tuple(source.shape)}"
            )
        for start in range(0, n, step):
            G[start : start + step] = source[start : start + step]
    elif isinstance(kernel, str) and kernel in TORCH_KERNELS:
        for start in range(0, n, step):
            G[start : start + step] = _torch_kernel_block(
                torch, X64[start : start + step], X64, kernel, params
            )
    else:
        X_host = np.asarray(X.detach().cpu() if tensor_input else X, dtype=float)
        for start in range(0, n, step):
            block = kernel_fn(X_host[start : start + step], X_host)
            G[start : start + step] = torch.as_tensor(block, device=dev)

    bad, scale, asym = 0, 0.0, 0.0
    for start in range(0, n, step):  # row blocks: no K x K temporaries on the device
        rows = G[start : start + step]
        finite = torch.isfinite(rows)
        if not bool(finite.all()):
            bad += int((~finite).sum())
            continue
        scale = max(scale, float(rows.abs().max()))
        asym = max(asym, float((rows - G[:, start : start + step].T).abs().max()))
    check_gram_statistics(bad, scale, asym, symmetry_rtol=symmetry_rtol)
    _torch_symmetrize_scaled(G, n)
    d, V = torch.linalg.eigh(G)
    del G
    d_host = d.double().cpu().numpy()
    V_host = V.cpu().numpy().astype(np.float64, copy=False)
    del V
    return Spectrum.from_eigh(d_host, V_host, n, psd_rtol=psd_rtol, null_rtol=null_rtol(dtype, n))


def _torch_symmetrize_scaled(G: Any, n: int) -> None:
    """G <- (G + G^T) / (2 K) in place, in square blocks (the torch twin of spectrum.symmetrize_scaled)."""
    b = max(1, int(np.sqrt(row_block(1, G.element_size()))))
    for i in range(0, n, b):
        for j in range(i, n, b):
            avg = (G[i : i + b, j : j + b] + G[j : j + b, i : i + b].T) / (2.0 * n)
            G[i : i + b, j : j + b] = avg
            G[j : j + b, i : i + b] = avg.T


def kernel_params(kernel: Any, gamma: Any, degree: Any, coef0: Any, extra: dict | None) -> dict[str, Any]:
    """The parameters scikit-learn would pass to ``kernel`` (as kernel_matrix does)."""
    if callable(kernel):
        return dict(extra or {})
    return {"gamma": gamma, "degree": degree, "coef0": coef0, **(extra or {})}


def numpy_kernel_fn(kernel: Any, gamma: Any, degree: Any, coef0: Any, extra: dict | None) -> Callable:
    """g(A, B) -> raw kernel block, through selfdistill.kernel.kernel_matrix."""

    def fn(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return kernel_matrix(A, B, kernel, gamma=gamma, degree=degree, coef0=coef0, kernel_params=extra)

    return fn
