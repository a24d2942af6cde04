"""Benchmark: one round of a self-distillation chain versus training the same model once with a plain loop.

In one run, alternating (to share whatever the machine is doing), it times:
  (a) ``selfdistill.nn.chain.run_chain`` for --rounds rounds of one seed, per round, everything included:
      teacher outputs (computed once per round and cached), fresh student, the training loop, the
      evaluation of train/val/test accuracy and loss, the atomic checkpoint and rounds.csv;
  (b) a hand-written minimal PyTorch loop: the same model, data, batch size, number of steps, Adam, loss,
      and a precomputed (cached) target tensor; nothing else.
Goal: (a) per round / (b) <= 1.05. Prints the ratio and training images per second.

    python benchmarks/bench_nn_chain.py [--model mlp|cnn] [--steps 1000] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from selfdistill.nn.chain import ChainSpec, run_chain
from selfdistill.nn.data import load_data
from selfdistill.nn.losses import build_loss
from selfdistill.nn.models import build_model
from selfdistill.nn.training import TrainSpec


def plain_loop(data, factory, loss_fn, steps: int, batch_size: int, targets: torch.Tensor) -> float:
    """The baseline: the minimal loop anyone would write. Returns seconds."""
    start = time.perf_counter()
    model = factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = data.x_train
    n = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=generator)
    position = 0
    model.train()
    for _ in range(steps):
        if position + batch_size > n:
            perm, position = torch.randperm(n, generator=generator), 0
        idx = perm[position : position + batch_size]
        position += batch_size
        loss = loss_fn(model(x[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def chain_per_round(data, factory, loss_fn, steps: int, batch_size: int, rounds: int) -> float:
    spec = ChainSpec(rounds=rounds, seeds=(0,), train=TrainSpec(lr=1e-3, batch_size=batch_size, steps=steps))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_chain(data, factory, loss_fn, spec, out_dir=out)
        return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data("digits")
    kwargs = {"hidden_sizes": (128, 128)} if args.model == "mlp" else {"channels": (32, 64)}

    def factory():
        return build_model(args.model, data.num_classes, data.input_shape, **kwargs)

    loss_fn = build_loss("l2")
    with torch.no_grad():  # cached teacher outputs for the baseline
        teacher = factory().eval()
        targets = torch.softmax(teacher(data.x_train), dim=1)

    plain_loop(data, factory, loss_fn, 50, args.batch_size, targets)  # warm-up
    chain_times, plain_times = [], []
    for _ in range(args.repeats):
        chain_times.append(chain_per_round(data, factory, loss_fn, args.steps, args.batch_size, args.rounds))
        plain_times.append(plain_loop(data, factory, loss_fn, args.steps, args.batch_size, targets))
    chain_s, plain_s = statistics.median(chain_times), statistics.median(plain_times)
    images = args.steps * args.batch_size
    print(
        f"digits ({data.num_train} train), {args.model}, batch {args.batch_size}, {args.steps} steps/round, "
        f"{args.threads} thread(s), median of {args.repeats}"
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
