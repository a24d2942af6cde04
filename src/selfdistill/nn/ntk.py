"""The empirical neural tangent kernel (NTK) of a network (Jacot, Gabriel, Hongler 2018).

For a model f(x; theta) with C outputs, the empirical NTK summed over the outputs is

    Theta[i, j] = sum_c  grad_theta f_c(x1_i) . grad_theta f_c(x2_j),

shape ``(len(x1), len(x2))``; with ``per_output=True`` the full blocks
``Theta[i, j, c, c'] = grad_theta f_c(x1_i) . grad_theta f_c'(x2_j)`` (shape ``(n1, n2, C, C)``; the summed
kernel is their trace over the last two axes). theta is every parameter with ``requires_grad`` (frozen
parameters and buffers are held fixed).

In the linearized ("lazy") regime, training f with squared loss and an L2 penalty on theta - theta_0 is
kernel ridge regression with this kernel (one regression per output when the blocks are close to
Theta_scalar x identity): this is what lets the exact kernel chain of :mod:`selfdistill.kernel` speak about a
network (see :mod:`selfdistill.experiments.ntk_bridge`). This module imports torch; ``selfdistill.kernel``
never does.

How it is computed: per-example Jacobians with ``torch.func`` (``functional_call`` + ``vmap`` + ``jacrev``)
on chunks of ``chunk_size`` examples, contracted chunk pair by chunk pair, parameter tensor by parameter
tensor, so memory stays at about two Jacobian blocks of ``chunk_size x C x n_params`` numbers. A request whose
blocks would exceed ``memory_budget`` is refused before any work with a one-line ``ValueError`` that names a
``chunk_size`` that fits. The model is deep-copied, put in eval mode (BatchNorm uses its running statistics,
so each example's output depends on that example alone) and, with ``dtype``, cast; the caller's model is
never modified, its mode included.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

__all__ = ["DEFAULT_CHUNK_SIZE", "default_memory_budget", "empirical_ntk", "jacobian_block_bytes"]

DEFAULT_CHUNK_SIZE = 64
_GIB = float(2**30)


def default_memory_budget(device: torch.device | str = "cpu") -> int:
    """Half of the memory available now on ``device`` (bytes): free GPU memory for CUDA, otherwise the
    available system memory (psutil when installed, ``os.sysconf`` on POSIX, 2 GiB when neither answers)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        import psutil

        return int(psutil.virtual_memory().available // 2)
    except ImportError:  # pragma: no cover - psutil is normally installed
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX without psutil
        return 2 * 2**30


def jacobian_block_bytes(chunk_size: int, n_outputs: int, n_params: int, itemsize: int) -> int:
    """Bytes of one Jacobian block: ``chunk_size x n_outputs x n_params x itemsize``."""
    return int(chunk_size) * int(n_outputs) * int(n_params) * int(itemsize)


def _check_inputs(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of inputs (n, ...), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one example (shape (n, ...)), "
                         f"got shape {tuple(x.shape)}")


def _single_example_fn(
    model: nn.Module, frozen: dict[str, Tensor]
) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """params, one example -> the model's outputs on it, flattened to (C,)."""

    def fn(params: dict[str, Tensor], x: Tensor) -> Tensor:
        out = functional_call(model, {**frozen, **params}, (x.unsqueeze(0),))
        return out.reshape(-1)

    return fn


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dtype: torch.dtype | None = None,
    per_output: bool = False,
    memory_budget: int | None = None,
) -> Tensor:
    """The empirical NTK of ``model`` between ``x1`` and ``x2`` (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Maps a batch ``(n, ...)`` to outputs ``(n, C)`` (any trailing shape is flattened to C outputs).
        Differentiated with respect to its parameters that require grad; evaluated in eval mode on a copy.
    x1, x2 : Tensor
        Inputs ``(n1, ...)`` and ``(n2, ...)``. ``x2=None`` means ``x1``: the kernel is then symmetric,
        computed once per pair of chunks and mirrored (exactly symmetric).
    chunk_size : int
        Examples per Jacobian block (memory about two blocks of ``chunk_size x C x n_params`` numbers).
    dtype : torch.dtype, optional
        Compute in this floating dtype (e.g. ``torch.float64``) on a cast copy of the model and inputs;
        default: the dtype of the model's first trainable parameter.
    per_output : bool
        False (default): ``(n1, n2)``, summed over outputs. True: ``(n1, n2, C, C)`` with entries
        ``grad f_c(x1_i) . grad f_c'(x2_j)``.
    memory_budget : int, optional
        Bytes allowed for the two Jacobian blocks and for the result; default
        :func:`default_memory_budget` on the model's device.

    Returns
    -------
    Tensor
        The kernel, on the model's device, in the compute dtype.
    """
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    _check_inputs(x1, "x1")
    symmetric = x2 is None
    if not symmetric:
        _check_inputs(x2, "x2")
        if tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
            raise ValueError(f"x2 examples have shape {tuple(x2.shape[1:])} but x1 examples have "
                             f"{tuple(x1.shape[1:])}; both must be inputs of the same model")

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no parameter with requires_grad=True: its NTK is zero")
    compute_dtype = dtype if dtype is not None else trainable[0].dtype
    device = trainable[0].device

    work = copy.deepcopy(model)  # the caller's model keeps its mode, dtype and state
    work.eval()
    if dtype is not None:
        work.to(dtype)
    params = {name: p.detach() for name, p in work.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in work.named_parameters() if not p.requires_grad}
    frozen.update(dict(work.named_buffers()))
    fn = _single_example_fn(work, frozen)

    def as_input(x: Tensor) -> Tensor:
        x = x.to(device)
        return x.to(compute_dtype) if x.is_floating_point() else x

    x1 = as_input(x1)
    x2 = x1 if symmetric else as_input(x2)
    with torch.no_grad():
        n_outputs = int(fn(params, x1[0]).numel())
    n_params = sum(p.numel() for p in params.values())
    itemsize = torch.empty((), dtype=compute_dtype).element_size()

    budget = default_memory_budget(device) if memory_budget is None else int(memory_budget)
    n1, n2 = x1.shape[0], x2.shape[0]
    effective_chunk = min(chunk_size, max(n1, n2))
    need = 2 * jacobian_block_bytes(effective_chunk, n_outputs, n_params, itemsize)
    if need > budget:
        per_example = 2 * jacobian_block_bytes(1, n_outputs, n_params, itemsize)
        fits = budget // per_example
        fix = (f"use chunk_size={fits} or smaller (or raise memory_budget)" if fits >= 1 else
               f"even chunk_size=1 needs {per_example / _GIB:.3g} GiB: use a smaller model, a smaller dtype, "
               "or raise memory_budget")
        raise ValueError(
            f"chunk_size={chunk_size}: two Jacobian blocks of {effective_chunk} examples x {n_outputs} "
            f"outputs x {n_params} parameters x {itemsize} bytes need {need / _GIB:.3g} GiB > memory_budget "
            f"{budget / _GIB:.3g} GiB; {fix}"
        )
    result_bytes = n1 * n2 * (n_outputs * n_outputs if per_output else 1) * itemsize
    if result_bytes > budget:
        raise ValueError(
            f"the kernel itself ({n1} x {n2}{f' x {n_outputs} x {n_outputs}' if per_output else ''} x "
            f"{itemsize} bytes = {result_bytes / _GIB:.3g} GiB) exceeds memory_budget "
            f"{budget / _GIB:.3g} GiB; "
            "pass fewer points" + (" or per_output=False" if per_output else "")
        )

    jacobian = vmap(jacrev(fn), in_dims=(None, 0))

    def block(x: Tensor) -> list[Tensor]:
        """Per parameter tensor, the Jacobian of the chunk as (n_chunk * C, p) (rows example-major)."""
        jac = jacobian(params, x)
        return [j.reshape(x.shape[0] * n_outputs, -1) for j in jac.values()]

    def contract(a: list[Tensor], b: list[Tensor], na: int, nb: int) -> Tensor:
        if per_output:
            total = sum(ja @ jb.T for ja, jb in zip(a, b, strict=True))  # (na*C, nb*C)
            return total.reshape(na, n_outputs, nb, n_outputs).permute(0, 2, 1, 3)
        return sum(
            ja.reshape(na, -1) @ jb.reshape(nb, -1).T for ja, jb in zip(a, b, strict=True)
        )  # rows of ja.reshape(na, -1) are (C, p) flattened: the sum over outputs is in the inner product

    shape = (n1, n2, n_outputs, n_outputs) if per_output else (n1, n2)
    theta = torch.empty(shape, dtype=compute_dtype, device=device)
    starts2 = list(range(0, n2, chunk_size))
    # keep x2's blocks when all of them plus one x1 block (and the result) fit in the budget; otherwise
    # recompute them for every x1 chunk (memory stays at two blocks)
    block_bytes = jacobian_block_bytes(effective_chunk, n_outputs, n_params, itemsize)
    cache: dict[int, list[Tensor]] | None = (
        {} if (len(starts2) + 1) * block_bytes + result_bytes <= budget else None
    )

    def block2(j: int) -> list[Tensor]:
        if cache is None:
            return block(x2[j:j + chunk_size])
        if j not in cache:
            cache[j] = block(x2[j:j + chunk_size])
        return cache[j]

    with torch.no_grad():
        for i in range(0, n1, chunk_size):
            xa = x1[i:i + chunk_size]
            ja = block2(i) if symmetric else block(xa)
            for j in starts2:
                if symmetric and j < i:
                    continue
                nb = min(chunk_size, n2 - j)
                jb = block2(j)
                part = contract(ja, jb, xa.shape[0], nb)
                if symmetric and j == i:  # make the diagonal block exactly symmetric
                    part = 0.5 * (part + (part.permute(1, 0, 3, 2) if per_output else part.T))
                theta[i:i + xa.shape[0], j:j + nb] = part
                if symmetric and j > i:
                    theta[j:j + nb, i:i + xa.shape[0]] = part.permute(1, 0, 3, 2) if per_output else part.T
    return theta
