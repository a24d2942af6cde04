"""Memory of the kernel routes: the exact route's size guard, and the row blocks of every big product.

The exact route holds K x K matrices (the kernel matrix, then its eigenvectors); before building one,
``check_exact_route_fits`` compares their size with the memory available and refuses, in one line and
before any allocation, a K that does not fit, naming ``solver="nystroem"`` with an ``n_components`` that
does. The Nystroem route needs O(m^2 + block) memory: ``nystroem_route_bytes``.

Every product that would make a large matrix in one call is done in row blocks of about ``BLOCK_BYTES``
(``row_block``). Besides bounding temporaries, this keeps single BLAS calls small: on the development
machine one ``X @ X.T`` with X of shape (30000, 8) (a 30,000 x 30,000 result) crashes numpy's OpenBLAS
0.3.31 with a segmentation fault when it runs 2 threads, while the same product in row blocks of
2,048 x 30,000, or with one thread, succeeds. Blocking keeps every BLAS call of this package far below
that size without giving up threads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: bytes of one row block of a blocked product (its temporaries are a small multiple of this).
BLOCK_BYTES = 64 * 2**20
#: bytes allowed for one row block and its temporaries in the memory estimates.
BLOCK_ALLOWANCE = 64 * 2**20
#: the exact route may use at most this fraction of the available memory.
MEMORY_FRACTION = 0.9
#: n_components offered by the size guard, largest first.
SUGGESTED_N_COMPONENTS = (10_000, 5_000, 2_000, 1_000, 500, 200, 100)
#: m x m float64 matrices the Nystroem route holds at once (K_mm, its eigenvectors, the map to the
#: feature space, Phi^T Phi, its eigenvectors, the map to the eigenbasis; see selfdistill.kernel.lowrank).
NYSTROEM_SQUARE_COPIES = 6


class KernelSizeError(ValueError):
    """The exact route's K x K matrices do not fit in the available memory (a ValueError: bad input)."""


def row_block(n_cols: int, itemsize: int = 8, budget: int | None = None) -> int:
    """Rows per block so that one block of ``n_cols`` columns takes about ``budget`` bytes (default
    BLOCK_BYTES, read at call time) (at least 1)."""
    budget = BLOCK_BYTES if budget is None else budget
    return max(1, int(budget // max(1, n_cols * itemsize)))


def _cgroup_available() -> int | None:
    """Memory left under a cgroup v2 limit (containers), or None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if limit == "max":
        return None
    try:
        return max(0, int(limit) - int(current))
    except ValueError:
        return None


def available_memory_bytes() -> int:
    """Host memory available to this process: psutil's ``available`` (or free pages from os.sysconf),
    lowered to what a cgroup limit leaves."""
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        available = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    cgroup = _cgroup_available()
    return available if cgroup is None else min(available, cgroup)


def exact_route_bytes(n_samples: int, copies: int, itemsize: int = 8) -> int:
    """Bytes of the exact route: ``copies`` K x K matrices plus one row block."""
    return int(copies) * int(n_samples) ** 2 * int(itemsize) + BLOCK_ALLOWANCE


def nystroem_route_bytes(n_components: int) -> int:
    """Bytes of the Nystroem route with m centres: the m x m matrices plus a few row blocks (float64)."""
    return NYSTROEM_SQUARE_COPIES * int(n_components) ** 2 * 8 + 4 * BLOCK_ALLOWANCE


def suggest_n_components(n_samples: int, available: int) -> int:
    """The largest of SUGGESTED_N_COMPONENTS below K whose Nystroem route fits in half the available memory
    (the smallest one if none does)."""
    for m in SUGGESTED_N_COMPONENTS:
        if m < n_samples and nystroem_route_bytes(m) <= available / 2:
            return m
    return min(SUGGESTED_N_COMPONENTS[-1], max(1, n_samples - 1))


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_exact_route_fits(
    n_samples: int,
    *,
    copies: int,
    itemsize: int = 8,
    available: int | None = None,
    where: str = "memory",
    what: str = "the kernel matrix and its eigenvectors",
) -> None:
    """Raise KernelSizeError (one line) if ``copies`` K x K matrices of ``itemsize`` bytes do not fit in
    MEMORY_FRACTION of the available memory (host memory by default, or ``available`` bytes of ``where``).
    Costs O(1): call it before allocating anything of size K^2."""
    if available is None:
        available = available_memory_bytes()
    need = exact_route_bytes(n_samples, copies, itemsize)
    if need <= MEMORY_FRACTION * available:
        return
    m = suggest_n_components(n_samples, available)
    raise KernelSizeError(
        f"solver='exact' needs about {_gib(need)} of {where} for K={n_samples} points ({copies} K x K "
        f"matrices of {itemsize}-byte numbers: {what}), more than the {_gib(available)} available; use "
        f"solver='nystroem' with n_components={m} (about {_gib(nystroem_route_bytes(m))}), or fewer samples"
    )


def largest_exact_k(available: int, copies: int, itemsize: int = 8) -> int:
    """The largest K the exact route accepts with ``available`` bytes (for messages and benchmarks)."""
    room = MEMORY_FRACTION * available - BLOCK_ALLOWANCE
    return max(0, int(math.isqrt(max(0, int(room // (copies * itemsize))))))
