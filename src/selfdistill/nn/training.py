"""The one training loop: every experiment (self-distillation chains, early stopping, PTLoss) uses it.

:func:`train` fits ``model`` to per-example TARGET PROBABILITIES (one-hot labels at round 0, a teacher's
softmax later; Mobahi et al. 2020, Section 5) with a loss ``loss_fn(student_logits, target_probs)`` that
averages over the batch. Targets are either a tensor (N, C) indexed by the batch (teacher outputs cached
once) or a callable ``targets(x_batch, batch_indices) -> (B, C)`` evaluated on the (augmented) batch.

Budget: ``steps`` optimizer steps, or ``epochs`` passes (``ceil(epochs * N / batch_size)`` steps). Batches
are consecutive chunks of a stream of random permutations of the training set drawn from a seeded
``torch.Generator``, so every batch has exactly ``batch_size`` examples (or N when N is smaller) and a run
is deterministic on the CPU for a given generator seed. Augmentation draws from the same generator.

Weight decay (the paper: "weight decay added to the loss"):
  * ``weight_decay_mode="l2"`` (default, the paper): coupled L2, i.e. ``loss + weight_decay/2 * ||w||^2``
    over all parameters, implemented by ``torch.optim.Adam/SGD(weight_decay=...)`` (gradient += wd * w);
  * ``weight_decay_mode="decoupled"``: AdamW-style decay ``w <- w - lr * wd * w`` (``torch.optim.AdamW``;
    for SGD the two coincide without momentum, and ``decoupled`` is rejected to avoid a silent mismatch).

``stop_condition(state) -> bool`` is called every ``check_every`` steps and after the last step; returning
True ends training (early stopping at a target loss, Figure 6). The model is put back into train mode after
the call, so the callback may evaluate it.

Inputs are a tensor ``(N, ...)`` (batches are ``inputs[indices]``) or a
:class:`~selfdistill.nn.inputs.DatasetInputs` (a map-style Dataset read through a ``DataLoader`` whose
``batch_sampler`` yields the SAME index batches, so both give the same batches and the same weights).

Speed switches of :class:`TrainSpec` (all off by default; Issue 9, "the neural chain at GPU speed"):

* ``bf16``: the forward pass and the loss of each training step run under
  ``torch.autocast(device_type, dtype=torch.bfloat16)``; the loss is computed on the logits cast back to
  float32. Weights, optimizer state and every evaluation (:func:`predict_logits`) stay float32.
* ``channels_last``: the model and every 4-D input batch (training and evaluation) use
  ``torch.channels_last`` memory (faster convolutions on tensor cores); the numbers agree with the default
  layout to float rounding.
* ``compile``: the training forward runs through ``torch.compile`` (the first steps compile; evaluation
  runs the eager model, which shares the weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfdistill.nn.distributed import (
    SINGLE_PROCESS,
    DistContext,
    agree,
    shard_indices,
    unwrap_model,
    wrap_model,
)
from selfdistill.nn.inputs import DatasetInputs, StreamBatchSampler, loader_seed, num_examples

TargetFn = Callable[[Tensor, Tensor], Tensor]
Augment = Callable[[Tensor, torch.Generator], Tensor]
Inputs = Tensor | DatasetInputs

OPTIMIZERS = ("adam", "sgd")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
# speed switches (module docstring): how a step is computed; bf16 also rounds its numbers; off by default
PERFORMANCE_SWITCHES = ("bf16", "channels_last", "compile")


@dataclass(frozen=True)
class TrainSpec:
    """Optimizer, budget and speed switches of one training run.

    Parameters
    ----------
    optimizer : {"adam", "sgd"}
        ``torch.optim.Adam`` (``AdamW`` with ``weight_decay_mode="decoupled"``) or ``torch.optim.SGD``.
    lr : float
        Learning rate.
    weight_decay : float
        Coupled L2 ("weight decay added to the loss", the paper) or decoupled decay (module docstring).
    weight_decay_mode : {"l2", "decoupled"}
    momentum : float
        SGD only.
    batch_size : int
        Examples per step (all N when N is smaller).
    steps, epochs : int or float
        The budget: give exactly one (``epochs`` becomes ``ceil(epochs * N / batch_size)`` steps).
    check_every : int
        Steps between calls of a ``stop_condition`` (early stopping).
    bf16 : bool, default False
        Speed switch: the forward pass and the loss of each training step run under
        ``torch.autocast(device_type, dtype=torch.bfloat16)``, the loss on the logits cast back to float32;
        weights, optimizer state and every evaluation stay float32. Results change by bf16 rounding.
    channels_last : bool, default False
        Speed switch: the model and every 4-D input batch (training and evaluation) use
        ``torch.channels_last`` memory (faster convolutions on tensor cores); the numbers agree with the
        default layout to float rounding.
    compile : bool, default False
        Speed switch: the training forward runs through ``torch.compile`` (the first steps compile;
        evaluation runs the eager model, which shares the weights).

    Notes
    -----
    A switch that is on enters the checkpoints' fingerprint (:func:`~selfdistill.nn.chain.spec_settings`):
    a chain resumed with other switches retrains its rounds.

    Examples
    --------
    >>> from selfdistill.nn import TrainSpec
    >>> TrainSpec(steps=500).total_steps(num_examples=1000)
    500
    >>> TrainSpec(epochs=2, batch_size=64).total_steps(num_examples=1000)   # ceil(2 * 1000 / 64)
    32
    >>> spec = TrainSpec(optimizer="sgd", lr=0.1, weight_decay=5e-4, epochs=30, bf16=True, channels_last=True)
    >>> TrainSpec(steps=10, epochs=1)
    Traceback (most recent call last):
    ...
    ValueError: give exactly one of steps or epochs (the training budget)
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"
    momentum: float = 0.9
    batch_size: int = 64
    steps: int | None = None
    epochs: float | None = None
    check_every: int = 50
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for switch in PERFORMANCE_SWITCHES:
            if not isinstance(getattr(self, switch), bool):
                raise ValueError(f"{switch} must be True or False; got {getattr(self, switch)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(
                f"weight_decay_mode must be one of {', '.join(WEIGHT_DECAY_MODES)}; "
                f"got {self.weight_decay_mode!r}"
            )
        if self.optimizer == "sgd" and self.weight_decay_mode == "decoupled":
            raise ValueError(
                "weight_decay_mode 'decoupled' is supported with adam (AdamW) only; use 'l2' with sgd"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number; got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs (the training budget)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0; got {self.epochs}")
        if self.check_every < 1:
            raise ValueError(f"check_every (eval_every) must be >= 1; got {self.check_every}")

    def total_steps(self, num_examples: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(float(self.epochs) * num_examples / min(self.batch_size, num_examples)))


@dataclass
class TrainState:
    """What a stop condition sees: the (unwrapped) model, the step count, the last batch loss."""

    step: int
    total_steps: int
    model: nn.Module
    batch_loss: float


@dataclass
class TrainResult:
    steps: int
    seconds: float
    stopped_early: bool
    last_batch_loss: float


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.weight_decay_mode == "decoupled":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


class BatchStream:
    """Consecutive ``batch_size`` chunks of an endless stream of seeded permutations of ``range(n)``."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n = n
        self.batch_size = min(batch_size, n)
        self.generator = generator
        self._buffer = torch.empty(0, dtype=torch.long)

    def next(self) -> Tensor:
        while self._buffer.numel() < self.batch_size:
            self._buffer = torch.cat([self._buffer, torch.randperm(self.n, generator=self.generator)])
        batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
        return batch


def _check_inputs(inputs: Inputs, targets: Tensor | TargetFn, augment: Augment | None) -> None:
    if not isinstance(inputs, Tensor | DatasetInputs):
        raise ValueError(f"inputs must be a torch.Tensor or a DatasetInputs; got {type(inputs).__name__}")
    n = num_examples(inputs)
    if n < 1:
        raise ValueError("inputs is empty: nothing to train on")
    if augment is not None and isinstance(inputs, DatasetInputs):
        raise ValueError(
            "augment (a batch-level augmentation) works on tensor inputs; with a Dataset, put the random "
            "transforms in the Dataset itself"
        )
    if isinstance(targets, Tensor):
        if targets.ndim != 2 or targets.shape[0] != n:
            raise ValueError(
                f"targets must have shape (N, C) with N = {n} (the number of inputs); "
                f"got {tuple(targets.shape)}"
            )
        if not torch.isfinite(targets).all():
            raise ValueError("targets contain NaN or infinite values")
    elif not callable(targets):
        raise ValueError("targets must be a tensor (N, C) of probabilities or a callable (x_batch, indices)")


def _training_batches(
    inputs: Inputs,
    stream: BatchStream,
    total: int,
    augment: Augment | None,
    generator: torch.Generator,
    dist_ctx: DistContext,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(indices, x)`` for each of ``total`` steps (this rank's share of every global batch)."""
    if isinstance(inputs, DatasetInputs):
        sampler = StreamBatchSampler(stream, total, lambda batch: shard_indices(batch, dist_ctx))
        for x, indices in inputs.loader(batch_sampler=sampler, seed=loader_seed(generator)):
            yield indices, x
        return
    for _ in range(total):
        indices = stream.next()
        if augment is not None:
            # augment the GLOBAL batch on every rank so the shared generator stays in sync
            x_global = augment(inputs[indices], generator)
            local = shard_indices(torch.arange(indices.numel()), dist_ctx)
            yield indices[local], x_global[local]
        else:
            indices = shard_indices(indices, dist_ctx)
            yield indices, inputs[indices]


def to_device(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """``x`` on ``device`` (asynchronously from pinned memory on CUDA), in channels_last memory if asked
    and 4-D."""
    x = x.to(device, non_blocking=device.type == "cuda")
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train(
    model: nn.Module,
    inputs: Inputs,
    targets: Tensor | TargetFn,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    spec: TrainSpec,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    augment: Augment | None = None,
    stop_condition: Callable[[TrainState], bool] | None = None,
    on_step: Callable[[int, Tensor], None] | None = None,
    dist_ctx: DistContext = SINGLE_PROCESS,
) -> TrainResult:
    """Train ``model`` in place on ``(inputs, targets)``; see the module docstring for the conventions.

    ``inputs`` (a tensor, on the CPU or on ``device``, or a :class:`~selfdistill.nn.inputs.DatasetInputs`)
    give the batches, which are moved to ``device``; ``targets[indices]`` (or ``targets(x, indices)``) the
    targets. ``on_step(step, loss)`` receives the detached batch loss after each optimizer step (for progress
    bars; calling ``.item()`` on it synchronizes a GPU, so do that sparingly). Under DDP (``dist_ctx``) each
    rank trains on its shard of every global batch.
    """
    _check_inputs(inputs, targets, augment)
    device = torch.device(device)
    n = num_examples(inputs)
    total = spec.total_steps(n)
    model.to(device)
    if spec.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    trained = wrap_model(model, dist_ctx)
    if spec.compile:
        trained = torch.compile(trained)
    optimizer = make_optimizer(trained, spec)
    stream = BatchStream(n, spec.batch_size, generator)
    cached_targets = targets if isinstance(targets, Tensor) else None

    start = time.perf_counter()
    step = 0
    stopped = False
    loss = torch.zeros(())
    for indices, x_batch in _training_batches(inputs, stream, total, augment, generator, dist_ctx):
        x = to_device(x_batch, device, spec.channels_last)
        if cached_targets is not None:
            y = cached_targets[indices].to(device, non_blocking=device.type == "cuda")
        else:
            y = targets(x, indices.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.bf16):
            loss = loss_fn(trained(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if on_step is not None:
            on_step(step, loss.detach())
        if stop_condition is not None and (step % spec.check_every == 0 or step == total):
            state = TrainState(step=step, total_steps=total, model=model, batch_loss=float(loss.detach()))
            decision = agree(bool(stop_condition(state)), dist_ctx)
            model.train()
            if decision:
                stopped = step < total
                break
    if not math.isfinite(float(loss.detach())):
        raise ValueError(
            f"training diverged (batch loss {float(loss.detach())} at step {step}); lower the learning rate"
        )
    seconds = time.perf_counter() - start
    del trained
    model.eval()
    return TrainResult(
        steps=step, seconds=seconds, stopped_early=stopped, last_batch_loss=float(loss.detach())
    )


def eval_batches(inputs: Inputs, batch_size: int) -> Iterator[Tensor]:
    """The inputs in order, ``batch_size`` at a time (a Dataset through its DataLoader)."""
    if isinstance(inputs, DatasetInputs):
        for x, _ in inputs.loader(batch_size=batch_size):
            yield x
        return
    for i in range(0, inputs.shape[0], batch_size):
        yield inputs[i : i + batch_size]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    inputs: Inputs,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
    channels_last: bool = False,
) -> Tensor:
    """Float32 logits of ``model`` (eval mode, no grad, no autocast) on ``inputs`` (a tensor or a
    :class:`~selfdistill.nn.inputs.DatasetInputs`), in batches; returned on the CPU, shape ``(N, C)``."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    device = torch.device(device)
    chunks = [
        model(to_device(x, device, channels_last)).float().cpu() for x in eval_batches(inputs, batch_size)
    ]
    model.train(was_training)
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)


def predict_probs(
    model: nn.Module,
    inputs: Inputs,
    *,
    temperature: float = 1.0,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> Tensor:
    """``softmax(logits / temperature)`` of ``model`` on ``inputs`` (eval mode, no grad), on the CPU."""
    return F.softmax(predict_logits(model, inputs, device=device, batch_size=batch_size) / temperature, dim=1)


@torch.no_grad()
def loss_on(
    loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, targets: Tensor, chunk: int = 4096
) -> float:
    """Mean over examples of a batch-mean loss, evaluated in chunks (exact for per-example-mean losses)."""
    n = logits.shape[0]
    total = 0.0
    for i in range(0, n, chunk):
        part = slice(i, i + chunk)
        total += float(loss_fn(logits[part], targets[part])) * logits[part].shape[0]
    return total / n


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels.to(logits.device)).float().mean())


def evaluate(
    model: nn.Module,
    inputs: Inputs,
    labels: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    targets: Tensor | None = None,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> EvalResult:
    """Accuracy against ``labels`` and loss against ``targets`` (default: one-hot ``labels``) on a split."""
    logits = predict_logits(model, inputs, device=device, batch_size=batch_size)
    if targets is None:
        targets = one_hot(labels, num_classes or logits.shape[1])
    return EvalResult(accuracy=accuracy(logits, labels), loss=loss_on(loss_fn, logits, targets))
