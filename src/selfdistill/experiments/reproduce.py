"""Reproduce the papers' figures.

  kernel : Mobahi et al. (2020) Section 4 - Figure 2 (fit per round against sin(2 pi x)) and Figure 3
           (diagonal of B_t per round), for the paper's data and for the interior-only variant where G is
           positive definite. NumPy only, seconds.
  neural : a CPU-sized multi-round self-distillation chain on built-in data (scikit-learn digits), the
           trends of Section 5 (train accuracy on the original labels, test accuracy per round). Minutes.
  ntk    : the NTK bridge (not part of "all"): the kernel chain on the empirical NTK of the initialized
           network beside the network's own chain, per round (digits, label noise, an MLP); into
           --out/ntk_bridge. Minutes.

Everything lands in --out as PNG plots, CSV/JSON numbers and a short summary printed at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--what",
        choices=["all", "kernel", "neural", "ntk"],
        default="all",
        help="which reproduction to run (default: all = kernel and neural; ntk runs alone)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/reproduce"), help="output folder")
    parser.add_argument(
        "--epsilon",
        type=float,
        default=0.05,
        help="kernel: loss tolerance eps for the paper's 11 points (feasible for eps > 0.0419; default 0.05 "
        "shows improve-then-underfit)",
    )
    parser.add_argument(
        "--interior-epsilon",
        type=float,
        default=0.01,
        help="kernel: eps for the interior-only variant x = 0.1..0.9 (default 0.01)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="neural, ntk: a smaller, faster run (fewer seeds and steps) for smoke testing",
    )


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.what in ("all", "kernel"):
        from selfdistill.experiments.kernel_figures import reproduce_section4

        reproduce_section4(out / "kernel", epsilon=args.epsilon, interior_epsilon=args.interior_epsilon)
    if args.what in ("all", "neural"):
        from selfdistill.experiments.neural_reproduce import reproduce_neural

        reproduce_neural(out / "neural", quick=args.quick)
    if args.what == "ntk":
        from selfdistill.experiments.ntk_bridge import run_ntk_bridge

        run_ntk_bridge(out / "ntk_bridge", quick=args.quick)
    print(f"results written to {out}")
    return 0
