"""Exact kernel self-distillation (Mobahi, Farajtabar, Bartlett 2020) on your data.

Data: a CSV file (feature columns plus a label column chosen by --target; or labels in a separate
--labels file) or an NPZ file with arrays X and y (optional X_test, y_test). A test set can also be given
with --test / --test-labels (CSV). One eigendecomposition of G = Kxx/K serves every round: round 0 solves
min R(f) s.t. (1/K) sum (f(x_k) - y_k)^2 <= eps, round t refits the predictions of round t-1, until
--rounds or until collapse (||y_t||^2 <= K eps).

With --solver nystroem --n-components M the chain is the exact chain of a rank-M Nystroem approximation
of the kernel (O(M^2) memory; nystroem.npz then holds the centres and per-round coefficients).

Writes into --out: result.json (the whole chain, reloadable with ChainResult.from_json), rounds.csv
(per-round table), test_rounds.csv (with a test set), theory.txt/theory.json (the paper's bounds beside
what happened), and plots (c_t, label energy, B_t diagonals, fitted functions for 1-D inputs).

Example:
  selfdistill kernel --data train.csv --target y --kernel rbf --gamma 0.5 --epsilon 0.05 --out results/k
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from pathlib import Path

import numpy as np

from selfdistill.io import (
    atomic_save_figure,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
)

CSV_SUFFIXES = (".csv", ".txt")
EIGENVECTORS_AUTO_LIMIT = 1000  # save eigenvectors in result.json up to this K (K^2 numbers) by default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, required=True, help="training data: .csv or .npz (arrays X, y)")
    data.add_argument(
        "--target",
        default=None,
        help="CSV: label column, by header name or 0-based index (negative counts from the end; "
        "default: the last column). Several columns: comma-separated (multi-output)",
    )
    data.add_argument(
        "--labels", type=Path, default=None, help="CSV: labels in a separate file (all columns)"
    )
    data.add_argument("--test", type=Path, default=None, help="CSV: test data, same layout as --data")
    data.add_argument("--test-labels", type=Path, default=None, help="CSV: test labels in a separate file")
    kern = parser.add_argument_group("kernel")
    kern.add_argument(
        "--kernel",
        default="rbf",
        help="rbf (default), laplacian, polynomial, sigmoid, linear, cosine, chi2, additive_chi2, "
        "spline (Green's function (59), 1-D inputs in [0, 1]), or precomputed (NPZ: X is the raw train "
        "kernel matrix, X_test the raw test-by-train matrix)",
    )
    kern.add_argument("--gamma", type=float, default=None, help="kernel gamma (default: 1 / n_features)")
    kern.add_argument("--degree", type=float, default=3, help="polynomial degree (default 3)")
    kern.add_argument("--coef0", type=float, default=1, help="polynomial/sigmoid coef0 (default 1)")
    solver = parser.add_argument_group("solver")
    solver.add_argument(
        "--solver",
        choices=["exact", "nystroem"],
        default="exact",
        help="exact (default): the K x K kernel matrix and one eigendecomposition; nystroem: the exact chain "
        "of a rank-m Nystroem approximation (m = --n-components centres), O(m^2) memory, for large K",
    )
    solver.add_argument(
        "--n-components", type=int, default=None, help="Nystroem centres m (--solver nystroem)"
    )
    solver.add_argument(
        "--center-selection",
        choices=["uniform", "leverage"],
        default="uniform",
        help="Nystroem centres: uniform (default) or by approximate ridge leverage scores",
    )
    solver.add_argument(
        "--random-state", type=int, default=0, help="seed of the Nystroem centres (default 0)"
    )
    chain = parser.add_argument_group("chain")
    chain.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="the constraint (1/K) sum (f(x_k) - y_k)^2 <= eps (default: 0.1 relative: 10%% of mean(y^2))",
    )
    chain.add_argument(
        "--epsilon-mode",
        choices=["absolute", "relative"],
        default="absolute",
        help="absolute (default, the paper's convention) or relative to mean(y^2)",
    )
    chain.add_argument("--rounds", type=int, default=None, help="rounds to fit (default: until collapse)")
    chain.add_argument("--max-rounds", type=int, default=1000, help="cap when running until collapse")
    chain.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="fixed-c mode: every round is KernelRidge(alpha) (c = alpha / K); with --rounds and no "
        "--epsilon exactly that many rounds, otherwise epsilon (default 0.1 relative) only detects collapse",
    )
    chain.add_argument(
        "--per-output-c", action="store_true", help="multi-output: one c per output (default: one shared c)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("results/kernel"), help="output folder")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    out.add_argument(
        "--eigenvectors",
        choices=["auto", "yes", "no"],
        default="auto",
        help=f"store eigenvectors in result.json (needed to predict after reloading; auto: K <= "
        f"{EIGENVECTORS_AUTO_LIMIT})",
    )


# ---- data loading ----------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """(header or None, float array of shape (n_rows, n_cols)). Empty cells become NaN (and are rejected)."""
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix.lower() not in CSV_SUFFIXES:
        raise ValueError(
            f"{path}: expected a CSV file (.csv or .txt), got {path.suffix!r}; an NPZ test set goes into the "
            "--data file as arrays X_test, y_test"
        )
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text CSV file; save it as plain-text CSV") from None
    if not rows:
        raise ValueError(f"{path}: the CSV file is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return cell.strip() == ""

    header = None
    if not all(numeric(cell) for cell in rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns ({sorted(widths)})")
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            if not numeric(cell):
                line = i + 1 + (header is not None)
                column = f"{header[j]!r}" if header is not None else str(j)
                raise ValueError(
                    f"{path}, line {line}, column {column}: non-numeric value {cell.strip()!r}; only numeric "
                    "columns are supported (encode categories as numbers, or drop the column)"
                )
    values = np.array(
        [[float(cell) if cell.strip() else np.nan for cell in row] for row in rows], dtype=float
    )
    if values.size == 0:
        raise ValueError(f"{path}: no data rows")
    return header, values


def _target_columns(target: str | None, header: list[str] | None, n_cols: int, path: Path) -> list[int]:
    if target is None:
        return [n_cols - 1]
    cols = []
    for token in str(target).split(","):
        token = token.strip()
        if header is not None and token in header:
            cols.append(header.index(token))
            continue
        try:
            index = int(token)
        except ValueError:
            known = ", ".join(header) if header else "no header row"
            raise ValueError(f"--target {token!r} is not a column of {path} (columns: {known})") from None
        if not -n_cols <= index < n_cols:
            raise ValueError(f"--target {index} out of range: {path} has {n_cols} columns")
        cols.append(index % n_cols)
    return cols


def _split_csv(path: Path, target: str | None, labels: Path | None) -> tuple[np.ndarray, np.ndarray]:
    header, values = _read_csv(path)
    if labels is not None:
        _, y = _read_csv(labels)
        X = values
    else:
        if values.shape[1] < 2:
            raise ValueError(f"{path} has one column: give a label column with --target or a --labels file")
        cols = _target_columns(target, header, values.shape[1], path)
        y = values[:, cols]
        X = np.delete(values, cols, axis=1)
    y = y[:, 0] if y.shape[1] == 1 else y
    if len(X) != len(y):
        raise ValueError(f"{path} has {len(X)} rows but the labels have {len(y)}: they must match")
    return X, y


def load_data(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(X, y, X_test, y_test) from the --data/--test options."""
    path: Path = args.data
    if not path.exists():
        raise FileNotFoundError(f"--data file not found: {path}")
    X_test = y_test = None
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in ("X", "y") if name not in npz.files]
            if missing:
                raise ValueError(f"{path} lacks array(s) {missing}; it has {npz.files} (need X, y)")
            X, y = np.asarray(npz["X"], dtype=float), np.asarray(npz["y"], dtype=float)
            if "X_test" in npz.files:
                X_test = np.asarray(npz["X_test"], dtype=float)
                y_test = np.asarray(npz["y_test"], dtype=float) if "y_test" in npz.files else None
        X = X[:, None] if X.ndim == 1 else X
        if X_test is not None and X_test.ndim == 1:
            X_test = X_test[:, None]
    elif path.suffix.lower() in CSV_SUFFIXES:
        X, y = _split_csv(path, args.target, args.labels)
    else:
        raise ValueError(f"--data {path}: unsupported file type {path.suffix!r}; use .csv or .npz")
    _check_training_arrays(X, y, path)
    if args.test is not None:
        X_test, y_test = _split_csv(args.test, args.target, args.test_labels)
        _check_test_arrays(X, y, X_test, y_test, args.test)
    elif X_test is not None:
        _check_test_arrays(X, y, X_test, y_test, path)
    return X, y, X_test, y_test


def _check_finite(array: np.ndarray, what: str) -> None:
    from selfdistill.kernel.estimator import nonfinite_rows

    found = nonfinite_rows(array)
    if found is not None:
        raise ValueError(
            f"{what} contain {found[0]} NaN, empty or infinite value(s), in data row(s) {found[1]} "
            "(0-based, a header row not counted); remove those rows or impute the values"
        )


def _check_training_arrays(X: np.ndarray, y: np.ndarray, source: Path) -> None:
    if X.ndim != 2:
        raise ValueError(f"{source}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{source}: y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{source}: X has {len(X)} rows but y has {len(y)}: one label row per sample")
    _check_finite(X, f"{source}: the features (X)")
    _check_finite(y, f"{source}: the labels (y)")


def _check_test_arrays(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray | None, source: Path
) -> None:
    if y_test is None:
        raise ValueError(f"{source}: X_test is given without y_test; add the test labels (array y_test)")
    if X_test.ndim != 2 or X_test.shape[1] != X.shape[1]:
        raise ValueError(
            f"{source}: the test features have shape {X_test.shape} but the training features have "
            f"{X.shape[1]} column(s); the test set needs the same columns (precomputed kernel: the raw "
            "test-by-train matrix, one column per training point)"
        )
    if len(X_test) != len(y_test):
        raise ValueError(
            f"{source}: X_test has {len(X_test)} rows but y_test has {len(y_test)}; they must match"
        )
    y_cols = 1 if y.ndim == 1 else y.shape[1]
    y_test_cols = 1 if y_test.ndim == 1 else int(np.prod(y_test.shape[1:]))
    if y_test_cols != y_cols:
        raise ValueError(
            f"{source}: y_test has {y_test_cols} output column(s) but y has {y_cols}; they must match"
        )
    _check_finite(X_test, f"{source}: the test features (X_test)")
    _check_finite(y_test, f"{source}: the test labels (y_test)")


# ---- outputs ---------------------------------------------------------------------------------------------


def _test_rows(est, X_test: np.ndarray, y_test: np.ndarray) -> list[dict[str, float]]:
    y_flat = y_test.reshape(len(y_test), -1)
    denom = np.sum((y_flat - y_flat.mean(axis=0)) ** 2)
    rows = []
    for t, pred in enumerate(est.staged_predict(X_test)):
        sq = float(np.sum((pred.reshape(len(y_test), -1) - y_flat) ** 2))
        r2 = float(1.0 - sq / denom) if denom > 0 else float("nan")
        rows.append({"round": t, "test_mse": sq / len(y_test), "test_r2": r2})
    return rows


def _save_plots(result, out: Path, X: np.ndarray, kernel_fn) -> list[Path]:
    paths = []
    figures = {"c.png": result.plot_c, "norms.png": result.plot_norms, "b_diag.png": result.plot_b_diag}
    for name, make in figures.items():
        fig = make()
        atomic_save_figure(fig, out / name)
        paths.append(out / name)
    if X.shape[1] == 1 and kernel_fn is not None:
        grid = np.linspace(X.min(), X.max(), 400)[:, None]
        fig = result.plot_fits(X[:, 0], grid[:, 0], kernel_fn(grid, X))
        atomic_save_figure(fig, out / "fits.png")
        paths.append(out / "fits.png")
    return paths


def _write_theory(result, out: Path) -> str:
    """theory.txt (+ theory.json; per output theory_output{j}.json with --per-output-c); returns the text."""
    outputs = [None] if not result.per_output_c or result.n_outputs == 1 else list(range(result.n_outputs))
    sections = []
    for j in outputs:
        try:
            report = result.theory() if j is None else result.theory(output=j)
        except ValueError as err:  # fixed-c mode: the paper's bounds do not apply
            sections.append(f"theory report not applicable: {err}")
            continue
        name = "theory.json" if j is None else f"theory_output{j}.json"
        report.to_json(out / name)
        sections.append(str(report) if j is None else f"output {j} (its own chain, eps_{j}):\n{report}")
    text = "\n\n".join(sections)
    atomic_write_text(out / "theory.txt", text + "\n")
    return text


def _fit_or_explain(est, X: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
    """Fit; warnings become one stderr line each, and a collapse at round 0 (f = 0: nothing to distill,
    almost always an epsilon too large for the labels) is an error naming the option to change."""
    from selfdistill.kernel import CollapseWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    for w in caught:
        if not issubclass(w.category, CollapseWarning):
            print(f"selfdistill kernel: warning: {w.message}", file=sys.stderr)
    result = est.result_
    if result.n_rounds == 0 and result.collapsed:
        energy = float(result.mean_square_labels[0])
        eps = float(np.max(est.epsilon_))
        given = "" if args.epsilon is None else f"--epsilon {args.epsilon:g} ({args.epsilon_mode}) "
        fix = (
            "--epsilon < 1 (the fraction of mean(y^2) left as residual)"
            if args.epsilon_mode == "relative"
            else f"--epsilon < {energy:.6g}, or --epsilon-mode relative with --epsilon < 1"
        )
        raise ValueError(
            f"{given}collapses the chain at round 0: epsilon = {eps:.6g} >= ||y||^2/K = {energy:.6g}, so the "
            f"solution of eq. (1) is f = 0 and there is nothing to distill; use {fix}"
        )


def main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from selfdistill.kernel import KernelSelfDistillation

    nystroem = getattr(args, "solver", "exact") == "nystroem"
    if nystroem and args.n_components is None:
        raise ValueError("--solver nystroem needs --n-components M, the number of centres (e.g. 1000)")
    if not nystroem and getattr(args, "n_components", None) is not None:
        raise ValueError("--n-components is for --solver nystroem (the exact solver uses every point)")
    X, y, X_test, y_test = load_data(args)
    out: Path = args.out
    est = KernelSelfDistillation(
        kernel=args.kernel, epsilon=args.epsilon, epsilon_mode=args.epsilon_mode, n_rounds=args.rounds,
        alpha=args.alpha, per_output_c=args.per_output_c, gamma=args.gamma, degree=args.degree,
        coef0=args.coef0, max_rounds=args.max_rounds,
    )  # fmt: skip
    if nystroem:
        est.set_params(
            solver="nystroem", n_components=args.n_components, center_selection=args.center_selection,
            random_state=args.random_state,
        )  # fmt: skip
    K = len(X)
    stages = ["kernel matrix + eigendecomposition + rounds", "test predictions", "theory", "plots", "files"]
    with tqdm(total=len(stages), desc="selfdistill kernel", disable=None if K >= 1000 else True) as bar:
        bar.set_postfix_str(stages[0])
        _fit_or_explain(est, X, y, args)
        result = est.result_
        out.mkdir(parents=True, exist_ok=True)
        bar.update()
        test_rows = None
        if X_test is not None and y_test is not None:
            test_rows = _test_rows(est, X_test, y_test)
        bar.update()
        theory_text = _write_theory(result, out)
        bar.update()
        plots = []
        if not args.no_plots and result.n_rounds > 0:
            kernel_fn = None if args.kernel == "precomputed" or nystroem else est._kernel
            plots = _save_plots(result, out, X, kernel_fn)
        bar.update()
        save_vectors = args.eigenvectors == "yes" or (
            args.eigenvectors == "auto" and K <= EIGENVECTORS_AUTO_LIMIT
        )
        result.to_json(out / "result.json", include_eigenvectors=save_vectors)
        result.to_csv(out / "rounds.csv")
        if nystroem:  # what predictions need: f_t(x) = k(x, centers) @ center_coefs[t]
            buffer = io.BytesIO()
            np.savez(buffer, centers=est.centers_, center_coefs=est.center_coefs_)
            atomic_write_bytes(out / "nystroem.npz", buffer.getvalue())
        if test_rows is not None:
            atomic_write_csv(out / "test_rounds.csv", test_rows, ["round", "test_mse", "test_r2"])
        atomic_write_json(
            out / "run.json",
            {"argv": sys.argv[1:], "K": K,
             "epsilon_used": None if est.epsilon_ is None else np.ravel(est.epsilon_),
             "n_rounds": result.n_rounds, "status": result.status, "timings": result.timings},
        )  # fmt: skip
        bar.update()
    print(result)
    if test_rows is not None:
        print("test set: " + "  ".join(f"round {r['round']}: MSE {r['test_mse']:.5g}" for r in test_rows))
    print(theory_text)
    print(f"results written to {out} ({len(plots)} plots)")
    return 0
