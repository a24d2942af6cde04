"""Benchmark: one round of a self-distillation chain versus training the same model once with a plain loop.

In one run, alternating (to share whatever the machine is doing), it times:
  (a) ``selfdistill.nn.chain.run_chain`` for --rounds rounds of one seed, per round, everything included:
      teacher outputs (computed once per round and cached), fresh student, the training loop, the
      evaluation of train/val/test accuracy and loss, the atomic checkpoint and rounds.csv;
  (b) a hand-written minimal PyTorch loop: the same model, data, batch size, number of steps, Adam, loss,
      a precomputed (cached) target tensor and the same speed switches; nothing else.
Goal: (a) per round / (b) <= 1.05. Prints the ratio and training images per second (img/s = steps x batch
size / seconds), on the GPU when one is present (``--device auto``), saying plainly when there is none.

Speed switches (Issue 9, "the neural chain at GPU speed"; the chain's ``TrainSpec`` / the train config's
``performance`` section): ``--bf16`` (bf16 autocast of the training forward pass and loss),
``--channels-last`` (model and 4-D batches in channels_last memory), ``--compile`` (``torch.compile`` of
the training forward; the first steps compile, so use enough --steps for the compile time to wash out).

    python benchmarks/bench_nn_chain.py [--model mlp|cnn|resnet20] [--data digits|synthetic-cifar]
        [--steps 1000] [--batch-size 64] [--rounds 3] [--device auto|cpu|cuda]
        [--bf16] [--channels-last] [--compile]

``--data synthetic-cifar``: random 3x32x32 inputs and random labels (5000 train, 500 val, 500 test),
for speed only (no CIFAR files needed).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import torch

from selfdistill.nn.chain import ChainSpec, run_chain
from selfdistill.nn.data import DataSplits, load_data
from selfdistill.nn.distributed import resolve_device
from selfdistill.nn.losses import build_loss
from selfdistill.nn.models import build_model
from selfdistill.nn.training import TrainSpec


def synthetic_cifar(n_train: int = 5000, n_eval: int = 500) -> DataSplits:
    g = torch.Generator().manual_seed(0)

    def split(n):
        return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

    (x, y), (xv, yv), (xt, yt) = split(n_train), split(n_eval), split(n_eval)
    return DataSplits(
        name="synthetic-cifar", x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt,
        num_classes=10, input_shape=(3, 32, 32), augment=None, clean_y_train=y,
        noise_mask=torch.zeros_like(y, dtype=torch.bool),
    )  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(data, factory, loss_fn, spec: TrainSpec, targets: torch.Tensor, device: torch.device) -> float:
    """The baseline: the minimal loop anyone would write, with the same switches. Returns seconds."""
    synchronize(device)
    start = time.perf_counter()
    model = factory().to(device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if spec.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    x = data.x_train
    n, batch_size = x.shape[0], spec.batch_size
    generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=generator)
    position = 0
    model.train()
    for _ in range(spec.steps):
        if position + batch_size > n:
            perm, position = torch.randperm(n, generator=generator), 0
        idx = perm[position : position + batch_size]
        position += batch_size
        batch = x[idx]
        if spec.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        bf16 = torch.autocast(device.type, dtype=torch.bfloat16) if spec.bf16 else contextlib.nullcontext()
        with bf16:
            loss = loss_fn(forward(batch).float(), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def chain_per_round(data, factory, loss_fn, spec: TrainSpec, rounds: int, device: torch.device) -> float:
    chain = ChainSpec(rounds=rounds, seeds=(0,), train=spec)
    with tempfile.TemporaryDirectory() as out:
        synchronize(device)
        start = time.perf_counter()
        run_chain(data, factory, loss_fn, chain, device=device, out_dir=out)
        synchronize(device)
        return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["mlp", "cnn", "resnet20"], default="mlp")
    parser.add_argument("--data", choices=["digits", "synthetic-cifar"], default="digits")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast of the training forward and loss")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and batches")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})")
    else:
        print(
            "device: CPU. No GPU was used"
            + (" (none is available here)" if not torch.cuda.is_available() else " (--device cpu)")
            + f": the images/s below are CPU figures ({args.threads} thread(s))."
        )

    data = load_data("digits") if args.data == "digits" else synthetic_cifar()
    data = data.to(device)
    kwargs = {"mlp": {"hidden_sizes": (128, 128)}, "cnn": {"channels": (32, 64)}, "resnet20": {}}[args.model]

    def factory():
        return build_model(args.model, data.num_classes, data.input_shape, **kwargs)

    spec = TrainSpec(
        lr=1e-3, batch_size=args.batch_size, steps=args.steps, bf16=args.bf16,
        channels_last=args.channels_last, compile=args.compile,
    )  # fmt: skip
    loss_fn = build_loss("l2")
    with torch.no_grad():  # cached teacher outputs for the baseline
        teacher = factory().to(device).eval()
        targets = torch.cat([torch.softmax(teacher(x), dim=1) for x in data.x_train.split(1024)])

    warm = TrainSpec(lr=1e-3, batch_size=args.batch_size, steps=50, bf16=args.bf16,
                     channels_last=args.channels_last, compile=args.compile)  # fmt: skip
    plain_loop(data, factory, loss_fn, warm, targets, device)  # warm-up (and compile caches)
    chain_times, plain_times = [], []
    for _ in range(args.repeats):
        chain_times.append(chain_per_round(data, factory, loss_fn, spec, args.rounds, device))
        plain_times.append(plain_loop(data, factory, loss_fn, spec, targets, device))
    chain_s, plain_s = statistics.median(chain_times), statistics.median(plain_times)
    images = args.steps * args.batch_size
    switches = [name for name, on in (("bf16", args.bf16), ("channels_last", args.channels_last),
                                      ("compile", args.compile)) if on]  # fmt: skip
    print(
        f"{data.name} ({data.num_train} train), {args.model}, batch {args.batch_size}, "
        f"{args.steps} steps/round, on {device}, switches: {', '.join(switches) or 'none'}, "
        f"median of {args.repeats}"
    )
    print(f"  plain PyTorch loop      : {plain_s:8.3f} s/round  {images / plain_s:10.0f} img/s")
    print(
        f"  selfdistill chain round : {chain_s:8.3f} s/round  {images / chain_s:10.0f} img/s "
        f"(incl. teacher outputs, evaluation, checkpoint)"
    )
    ratio = chain_s / plain_s
    print(f"  ratio chain / plain     : {ratio:8.3f}   goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
