"""How far the Nystroem route is from the exact route as the number of centres m grows.

Two data sets, both offline:
  - diabetes: scikit-learn's diabetes data (real, 442 patients, 10 features), 342 training points and 100
    test points (a fixed random split), features and target standardized;
  - friedman1: scikit-learn's make_friedman1 (synthetic, 8 features, noise 1), 2,000 training and 1,000
    test points, standardized.
RBF kernel with gamma = 1 / n_features and eps = SETTINGS[data set] (diabetes 0.4, noisy labels: smaller
eps needs more centres than a 342-point set allows; friedman1 0.1; targets standardized, so eps is
relative to mean(y^2)), the same for every m, rounds until collapse.
For each m (up to K, where the Nystroem route must equal the exact route), centre selection (uniform,
leverage) and seed, it records: whether eps is feasible (else the smallest feasible eps, the
labels' mean square outside the span of the centres), the rounds fitted, the largest relative error of
c_t over the rounds both chains fitted, and the relative error of the test predictions,
||f_t^nys - f_t^exact|| / ||f_t^exact|| on the test points, at round 0 and at the last common round.

Writes nystroem_error.csv, nystroem_error.png and run.json into --out (default results/nystroem_error).

    python benchmarks/nystroem_error.py [--out results/nystroem_error] [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.preprocessing import StandardScaler

from selfdistill.io import atomic_save_figure, atomic_write_csv, atomic_write_json
from selfdistill.kernel import KernelSelfDistillation
from selfdistill.kernel.backends import numpy_kernel_fn
from selfdistill.kernel.lowrank import nystroem_spectrum

FIELDS = [
    "dataset", "K", "selection", "m", "seed", "rank", "feasible", "min_feasible_epsilon", "rounds",
    "rounds_exact", "c_max_rel_error", "pred_rel_error_round0", "pred_rel_error_last", "last_common_round",
    "test_mse_exact_last", "test_mse_nystroem_last", "fit_s",
]  # fmt: skip


#: RBF gamma and eps (targets standardized: eps / mean(y^2)) per data set.
SETTINGS = {"diabetes": {"gamma": 0.1, "epsilon": 0.4}, "friedman1": {"gamma": 1 / 8, "epsilon": 0.1}}


def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(X))
        train, test = order[:342], order[342:]
    else:
        X, y = make_friedman1(n_samples=3000, n_features=8, noise=1.0, random_state=0)
        train, test = np.arange(2000), np.arange(2000, 3000)
    scaler = StandardScaler().fit(X[train])
    mean, std = y[train].mean(), y[train].std()
    return (
        scaler.transform(X[train]),
        (y[train] - mean) / std,
        scaler.transform(X[test]),
        (y[test] - mean) / std,
    )


def measure(X, y, X_test, y_test, exact, exact_pred, chain, selection, m, seed) -> dict:
    """One Nystroem fit against the exact route (see the module docstring for the columns)."""
    K = len(X)
    est = KernelSelfDistillation(**chain, solver="nystroem", n_components=m, center_selection=selection,
                                 random_state=seed)  # fmt: skip
    row = {"K": K, "selection": selection, "m": m, "seed": seed, "rounds_exact": exact.n_rounds_}
    t0 = time.perf_counter()
    try:
        est.fit(X, y)
    except ValueError as err:
        if "infeasible" not in str(err):
            raise
        kernel_fn = numpy_kernel_fn("rbf", chain["gamma"], 3, 1, None)
        spectrum = nystroem_spectrum(X, y, kernel_fn, m, center_selection=selection, random_state=seed)
        row.update(feasible=False, rank=spectrum.rank, rounds=0,
                   min_feasible_epsilon=float(spectrum.null_mean_square.sum()))  # fmt: skip
        return row
    row["fit_s"] = round(time.perf_counter() - t0, 4)
    rank = int(np.count_nonzero(est.result_.eigenvalues))
    n = min(est.n_rounds_, exact.n_rounds_)
    pred = list(est.staged_predict(X_test))

    def rel(t: int) -> float:
        return float(np.linalg.norm(pred[t] - exact_pred[t]) / np.linalg.norm(exact_pred[t]))

    row.update(
        feasible=True,
        rank=rank,
        min_feasible_epsilon=float(est.result_.z[0][0] ** 2 / K) if rank < K else 0.0,  # the null direction
        rounds=est.n_rounds_,
        c_max_rel_error=float(np.max(np.abs(est.c_[:n] / exact.c_[:n] - 1.0))),
        pred_rel_error_round0=rel(0),
        pred_rel_error_last=rel(n - 1),
        last_common_round=n - 1,
        test_mse_exact_last=float(np.mean((exact_pred[n - 1] - y_test) ** 2)),
        test_mse_nystroem_last=float(np.mean((pred[n - 1] - y_test) ** 2)),
    )
    return row


def m_grid(K: int) -> list[int]:
    grid = [m for m in (10, 25, 50, 100, 200, 400, 800, 1600) if m < K]
    return grid + [K]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/nystroem_error"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (m < K, selection) (default 3)")
    parser.add_argument("--datasets", default="diabetes,friedman1")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the CSV in --out")
    args = parser.parse_args()
    if args.replot:
        with open(args.out / "nystroem_error.csv", newline="") as fh:
            rows = [
                {k: (v == "True") if k == "feasible" else (v if k in ("dataset", "selection") else
                     (float(v) if v not in ("", None) else float("nan"))) for k, v in row.items()}
                for row in csv.DictReader(fh)
            ]  # fmt: skip
        atomic_save_figure(plot(rows), args.out / "nystroem_error.png")
        return

    started = time.perf_counter()
    rows: list[dict] = []
    for name in args.datasets.split(","):
        X, y, X_test, y_test = load(name)
        K = len(X)
        eps = SETTINGS[name]["epsilon"] * float(np.mean(y**2))
        chain = dict(kernel="rbf", gamma=SETTINGS[name]["gamma"], epsilon=eps, max_rounds=100)
        exact = KernelSelfDistillation(**chain).fit(X, y)
        exact_pred = list(exact.staged_predict(X_test))
        print(f"{name}: K={K}, eps={eps:.4g}, exact route: {exact.n_rounds_} rounds ({exact.result_.status})")
        for selection in ("uniform", "leverage"):
            for m in m_grid(K):
                for seed in range(1 if m == K else args.seeds):
                    row = measure(X, y, X_test, y_test, exact, exact_pred, chain, selection, m, seed)
                    rows.append({"dataset": name, **row})
                    if row["feasible"]:
                        print(f"  {selection:8s} m={m:5d} seed={seed}: rounds {row['rounds']}, c err "
                              f"{row['c_max_rel_error']:.2e}, pred err r0 {row['pred_rel_error_round0']:.2e} "
                              f"last {row['pred_rel_error_last']:.2e}")  # fmt: skip
                    else:
                        print(f"  {selection:8s} m={m:5d} seed={seed}: infeasible, smallest feasible eps "
                              f"{row['min_feasible_epsilon']:.4g}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(args.out / "nystroem_error.csv", rows, FIELDS)
    atomic_save_figure(plot(rows), args.out / "nystroem_error.png")
    atomic_write_json(args.out / "run.json", {"argv": sys.argv, "seconds": time.perf_counter() - started,
                                             "settings": SETTINGS})  # fmt: skip
    print(f"written to {args.out}")


def _summary(
    sub: list[dict], key: str, ms: list[int]
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(m with a feasible fit, median, min, max over seeds) of column ``key``."""
    shown, med, lo, hi = [], [], [], []
    for m in ms:
        vals = [float(r[key]) for r in sub if r["m"] == m and r["feasible"]]
        if vals:
            shown.append(m)
            med.append(np.median(vals))
            lo.append(min(vals))
            hi.append(max(vals))
    return shown, np.array(med), np.array(lo), np.array(hi)


def plot(rows: list[dict]):
    """Per data set: prediction error, c_t error and the smallest feasible eps against m (m < K); the
    m = K value (the exact limit) is written in each panel."""
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(16, 4.4 * len(datasets)), layout="constrained")
    axes = fig.subplots(len(datasets), 3, squeeze=False)
    panels = (
        ("pred_rel_error_last", "rel. error of test predictions (last common round)"),
        ("c_max_rel_error", "max rel. error of c_t"),
        ("min_feasible_epsilon", "smallest feasible eps"),
    )
    for i, name in enumerate(datasets):
        K = int(next(r["K"] for r in rows if r["dataset"] == name))
        for selection, style in (("uniform", "-o"), ("leverage", "--s")):
            sub = [r for r in rows if r["dataset"] == name and r["selection"] == selection]
            ms = sorted({int(r["m"]) for r in sub if int(r["m"]) < K})
            for j, (key, label) in enumerate(panels):
                ax = axes[i, j]
                if key == "min_feasible_epsilon":
                    vals = [np.median([float(r[key]) for r in sub if r["m"] == m]) for m in ms]
                    ax.plot(ms, vals, style, label=selection)
                else:
                    shown, med, lo, hi = _summary(sub, key, ms)
                    ax.errorbar(shown, med, yerr=[med - lo, hi - med], fmt=style, capsize=3,
                                label=f"{selection} (median, min-max over seeds)")  # fmt: skip
                    infeasible = [m for m in ms if m not in shown]
                    if infeasible:
                        ax.plot(infeasible, [1.0] * len(infeasible), "x", color=ax.lines[-1].get_color(),
                                label=f"{selection}: eps infeasible (plotted at 1)")  # fmt: skip
                exact_limit = [float(r[key]) for r in sub if int(r["m"]) == K and r["feasible"]]
                if selection == "leverage" and exact_limit:
                    ax.text(0.98, 0.04, f"m = K = {K} (exact limit): {max(exact_limit):.1e}",
                            transform=ax.transAxes, ha="right", fontsize="small")  # fmt: skip
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("centres m")
                ax.set_title(f"{name} (K={K}): {label}", fontsize="medium")
        axes[i, 2].axhline(SETTINGS[name]["epsilon"], color="k", ls=":", label="eps used")
        for ax in axes[i]:
            ax.legend(fontsize="x-small", loc="best")
    return fig


if __name__ == "__main__":
    main()
