"""Measurement behind the default PTLoss search range (issue 12.7): is it solvable, does it move the proxy?

For each teacher, candidate distribution and scale (M = 5, 200 candidates, full form unless ``--form``, one
temperature), prints the fraction of perturbed candidates whose proxy problem is non-convex (convexity
certificate <= 0) or whose solves did not all converge, how far the selected proxy moved from the
``eps = 0`` proxy (``eps_shift_tv``, mean total variation), the largest such move among eligible candidates,
and the validation Brier score of ``eps = 0`` and of the selection. Then one joint (eps, T) search per
teacher with the defaults over ``T in {1, 2, 4, 8}``.

Teachers: an MLP on scikit-learn's digits with 40 % symmetric label noise (noisy, overconfident) and
without noise (sharp), both trained as in ``configs/distill_digits.yaml`` (validation labels are clean);
and a synthetic overconfident teacher softmax(3 z) with labels drawn from softmax(z) (2000 x 10).

    python benchmarks/ptloss_search_range.py [--threads 2] [--form full]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from selfdistill.ptloss import select_perturbation

SETTINGS = (
    ("uniform", (0.25, 0.5, 1.0, 2.0)),  # the former default: uniform(-0.25, 0.25) per entry
    ("relative", (0.5, 0.9)),  # the default: eps_m = delta / m, delta ~ uniform(-0.9, 0.9)
)


def digits_teacher(label_noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    from selfdistill.nn.data import load_data
    from selfdistill.nn.losses import SoftCrossEntropyLoss
    from selfdistill.nn.models import build_model
    from selfdistill.nn.training import TrainSpec, one_hot, predict_logits, train

    data = load_data("digits", val_fraction=0.2, label_noise=label_noise, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.num_classes, data.input_shape, hidden_sizes=[256, 256])
    targets = one_hot(data.y_train, data.num_classes).float()
    spec = TrainSpec(lr=1e-3, batch_size=64, steps=1500)
    generator = torch.Generator().manual_seed(0)
    train(model, data.x_train, targets, SoftCrossEntropyLoss(), spec, generator=generator)
    return torch.softmax(predict_logits(model, data.x_val).double(), -1), data.y_val


def synthetic_teacher() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 10, generator=g, dtype=torch.float64) * 1.5
    labels = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return torch.softmax(3 * z, -1), labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--form", choices=("full", "truncated"), default="full")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teachers = {
        "digits, 40% noise": digits_teacher(0.4),
        "digits, clean": digits_teacher(0.0),
        "synthetic softmax(3z)": synthetic_teacher(),
    }
    print(f"form={args.form}, M=5, 200 candidates, T=1; fractions over the 199 perturbed candidates")
    header = (
        f"{'teacher':22s} {'distribution':9s} {'shared':6s} {'scale':>5s} | "
        f"{'nonconvex':>9s} {'not conv':>8s} | "
        f"{'selected moved':>14s} {'max eligible':>12s} | {'Brier eps=0':>11s} {'selected':>8s} | secs"
    )
    print(header)
    for name, (probs, labels) in teachers.items():
        for distribution, scales in SETTINGS:
            for class_wise in (True, False):
                for scale in scales:
                    start = time.perf_counter()
                    result = select_perturbation(
                        probs, labels, 5, 200, scale=scale, distribution=distribution,
                        class_wise=class_wise, form=args.form,
                    )  # fmt: skip
                    t = result.table
                    eligible = t["eligible"].astype(bool)
                    print(
                        f"{name:22s} {distribution:9s} {str(not class_wise):6s} {scale:5.2f} | "
                        f"{1 - t['convex'][1:].mean():9.3f} {1 - t['converged'][1:].mean():8.3f} | "
                        f"{t['eps_shift_tv'][result.best_index]:14.4f} "
                        f"{t['eps_shift_tv'][eligible].max():12.4f} | "
                        f"{t['brier'][0]:11.4f} {result.best_score:8.4f} | {time.perf_counter() - start:.1f}",
                        flush=True,
                    )
    print("\njoint (eps, T) search with the defaults, T in {1, 2, 4, 8} (softened space)")
    for name, (probs, labels) in teachers.items():
        result = select_perturbation(probs, labels, 5, 200, temperature=[1.0, 2.0, 4.0, 8.0], form=args.form)
        t = result.table
        kd = ", ".join(f"T={k:g}: {t['brier'][row]:.4f}" for k, row in result.zero_rows().items())
        print(
            f"{name:22s} selected candidate {result.best_candidate} at T={result.best_temperature:g}: Brier "
            f"{result.best_score:.4f} (eps = 0 per T: {kd}); moved by eps "
            f"{t['eps_shift_tv'][result.best_index]:.4f}; non-convex rows {int(np.sum(t['convex'] == 0))}, "
            f"not converged {int(np.sum(t['converged'] == 0))}"
        )


if __name__ == "__main__":
    main()
