"""Exact kernel self-distillation (Mobahi, Farajtabar, Bartlett 2020) on your data.

Data: a CSV file (feature columns plus a label column chosen by --target; or labels in a separate
--labels file) or an NPZ file with numeric arrays X and y (optional X_test, y_test). A test set can also
be given with --test / --test-labels (CSV). The first line of a CSV is its header, as pandas.read_csv reads
it; pass --no-header for files without one. One eigendecomposition of G = Kxx/K serves every round:
round 0 solves min R(f) s.t. (1/K) sum (f(x_k) - y_k)^2 <= eps, round t refits the predictions of round
t-1, until --rounds or until collapse (||y_t||^2 <= K eps).

Writes into --out (a run owns its folder while it runs; a non-empty folder is refused unless --overwrite):
result.json (the whole chain, reloadable with ChainResult.from_json), rounds.csv (per-round table),
test_rounds.csv (with a test set), theory.txt/theory.json (the paper's bounds beside what happened), run.json
and plots (c_t, label energy, B_t diagonals, fitted functions for 1-D inputs), every file atomically.

--rounds auto chooses the round without a test set (--selection gcv|holdout|kfold) and adds selection.csv,
selection.json and selection.png (the criterion per round, the choice); result.json then holds rounds 0..the
chosen one. --xi mixes ground truth into the targets (a chain with xi != 1 reloads with
selfdistill.kernel.MixedChainResult.from_json).

With --solver nystroem --n-components M the chain is the exact chain of a rank-M Nystroem approximation
of the kernel (O(M^2) memory; nystroem.npz then holds the centres and per-round coefficients).

Example:
  selfdistill kernel --data train.csv --target y --kernel rbf --gamma 0.5 --epsilon 0.05 --out runs/k
  selfdistill kernel --data train.csv --target y --epsilon 0.01 --rounds auto --selection kfold --out runs/k2
"""

from __future__ import annotations

import argparse
import io
import math
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import (
    RunFolder,
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
    data.add_argument(
        "--no-header",
        action="store_true",
        help="the CSV files have no header line (by default the first line is the header, as pandas "
        "reads it)",
    )
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
        "--random-state",
        type=int,
        default=0,
        help="seed of the Nystroem centres and of the --selection holdout/kfold split (default 0)",
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
    chain.add_argument(
        "--rounds",
        type=_rounds_arg,
        default=None,
        help="rounds to fit (default: until collapse), or 'auto': run until collapse, then choose the round "
        "with --selection (no test set); predictions and the tables use the chosen round",
    )
    chain.add_argument(
        "--selection",
        choices=["gcv", "holdout", "kfold"],
        default="gcv",
        help="--rounds auto: gcv (default; generalized cross-validation from tr B_t, no refits), holdout or "
        "kfold (refit the chain on the training part, score each round on the held-out part)",
    )
    chain.add_argument("--n-folds", type=int, default=5, help="--selection kfold: folds (default 5)")
    chain.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="--selection holdout: share of the data held out, in (0, 1) (default 0.2)",
    )
    chain.add_argument(
        "--xi",
        type=float,
        default=1.0,
        help="ground-truth mixing: round t >= 1 fits xi * f_(t-1)(X) + (1 - xi) * y (default 1: the paper); "
        "with --alpha and xi < 1 the rounds converge to KernelRidge(alpha / (1 - xi))",
    )
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
    out.add_argument(
        "--out", type=Path, default=Path("runs/kernel"), help="output folder (default: runs/kernel)"
    )
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what a non-empty --out holds (it is cleared once the fit has succeeded)",
    )
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    out.add_argument(
        "--eigenvectors",
        choices=["auto", "yes", "no"],
        default="auto",
        help=f"store eigenvectors in result.json (needed to predict after reloading; auto: K <= "
        f"{EIGENVECTORS_AUTO_LIMIT})",
    )


# ---- option checks ---------------------------------------------------------------------------------------


def check_options(args: argparse.Namespace) -> None:
    """One-line errors for option values that can never work, before any file is read or written."""
    from selfdistill.kernel import KERNEL_NAMES

    positive = {
        "--epsilon": (args.epsilon, "the allowed mean squared training residual; e.g. --epsilon 0.1 "
                      "--epsilon-mode relative for 10% of mean(y^2)"),
        "--alpha": (args.alpha, "fixed-c mode: every round is KernelRidge(alpha), c = alpha / K"),
        "--gamma": (args.gamma, "the kernel's scale; omit it for 1 / n_features"),
    }  # fmt: skip
    for option, (value, meaning) in positive.items():
        if value is not None and not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{option} {value:g} must be a finite number > 0 ({meaning})")
    for option, value in (("--degree", args.degree), ("--coef0", args.coef0)):
        if not math.isfinite(value):
            raise ValueError(f"{option} {value:g} must be a finite number")
    if isinstance(args.rounds, int) and args.rounds < 1:
        raise ValueError(
            f"--rounds {args.rounds} must be >= 1 (the number of rounds to fit, round 0 included); omit it "
            "to run until collapse"
        )
    if args.max_rounds < 1:
        raise ValueError(f"--max-rounds {args.max_rounds} must be >= 1 (the cap when running until collapse)")
    if args.solver == "nystroem" and args.n_components is None:
        raise ValueError("--solver nystroem needs --n-components M, the number of centres (e.g. 1000)")
    if args.solver != "nystroem" and args.n_components is not None:
        raise ValueError("--n-components is for --solver nystroem (the exact solver uses every point)")
    if args.kernel not in KERNEL_NAMES:
        raise ValueError(f"--kernel {args.kernel!r} is unknown; use one of {', '.join(KERNEL_NAMES)}")


def _rounds_arg(text: str) -> int | str:
    """--rounds: a positive integer or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)  # a value < 1 gets check_options' one-line error
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer or 'auto'") from None


# ---- data loading ----------------------------------------------------------------------------------------


class DataWarning(UserWarning):
    """Input that is read, but probably not as meant (a numeric-looking header, a pandas index column)."""


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: Path, option: str, *, header: bool = True) -> tuple[list[str] | None, np.ndarray]:
    """(column names, or None with ``header=False``; float array (n_rows, n_cols)) of a numeric CSV file.

    Read by ``pandas.read_csv`` with its defaults: the first line is the header (``header=False``: there
    is none), blank lines are skipped, pandas' missing-value markers (empty cell, NA, nan, ...) become NaN
    (rejected later, naming the rows). Never uses a column as the index. Warns (DataWarning) when the
    header looks numeric (pandas writes "0,1,2" for unnamed columns) or a column looks like a written
    pandas index. Every problem is a one-line ValueError naming ``option`` and the file.
    """
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"{option} file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a CSV file")
    if path.suffix.lower() not in CSV_SUFFIXES:
        raise ValueError(
            f"{option} {path}: expected a CSV file (.csv or .txt), got {path.suffix!r}; NPZ data goes into "
            "--data as arrays X, y (and X_test, y_test for a test set)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, header=0 if header else None, index_col=False, dtype=str)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{option} {path}: the CSV file is empty") from None
    except pd.errors.ParserWarning:  # a row longer than the header, which index_col=False would truncate
        raise ValueError(
            f"{option} {path}: some rows have more fields than the header line; every row needs the same "
            "columns as the header (a trailing comma counts as a field)"
        ) from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        detail = (
            f"line {found[2]} has {found[3]} fields where {found[1]} are expected"
            if found
            else str(err).strip().splitlines()[0]
        )
        raise ValueError(f"{option} {path}: {detail}; every row needs the same columns") from None
    except UnicodeDecodeError:
        raise ValueError(f"{option} {path} is not a UTF-8 text CSV file; save it as plain-text CSV") from None
    names = [str(name).strip() for name in frame.columns] if header else None
    if frame.shape[0] == 0:
        raise ValueError(
            f"{option} {path}: no data rows: the file holds only its header line {','.join(names or [])!r} "
            "(the first line of a CSV is its header; if that line is data, pass --no-header)"
        )
    values = frame.apply(lambda column: pd.to_numeric(column, errors="coerce")).to_numpy(dtype=float)
    non_numeric = np.isnan(values) & frame.notna().to_numpy()
    if non_numeric.any():
        i, j = (int(v) for v in np.argwhere(non_numeric)[0])
        column = repr(names[j]) if names is not None else str(j)
        hint = (
            "; the first line looks like a header: drop --no-header"
            if names is None and i == 0 and not any(_looks_numeric(str(c)) for c in frame.iloc[0] if c == c)
            else "; only numeric columns are supported (encode categories as numbers, or drop the column)"
        )
        raise ValueError(
            f"{option} {path}, data row {i} (0-based, the header not counted), column {column}: non-numeric "
            f"value {str(frame.iat[i, j]).strip()!r}{hint}"
        )
    if names is not None:
        given = [name for name in names if not name.startswith("Unnamed: ")]
        if given and all(_looks_numeric(name) for name in given):
            warnings.warn(
                DataWarning(
                    f"{option} {path}: the header line {','.join(names)!r} looks numeric; it is read as "
                    "column names, not as a data point (the first line of a CSV is its header); if it is "
                    "data, pass --no-header"
                ),
                stacklevel=2,
            )
        for j, name in enumerate(names):
            if name.startswith("Unnamed: ") and np.array_equal(values[:, j], np.arange(len(values))):
                warnings.warn(
                    DataWarning(
                        f"{option} {path}: column {j} has no header name and holds 0, 1, ..., "
                        f"{len(values) - 1}: it looks like a pandas index (DataFrame.to_csv without "
                        "index=False) and is read as a data column; drop it if it is not data"
                    ),
                    stacklevel=2,
                )
    return names, values


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
            known = ", ".join(header) if header else "no header row: use 0-based indices"
            raise ValueError(f"--target {token!r} is not a column of {path} (columns: {known})") from None
        if not -n_cols <= index < n_cols:
            raise ValueError(f"--target {index} out of range: {path} has {n_cols} columns")
        cols.append(index % n_cols)
    if len(set(cols)) != len(cols):
        raise ValueError(f"--target {target!r} names a column of {path} twice; name each label once")
    if len(cols) == n_cols:
        raise ValueError(f"--target {target!r} takes every column of {path}; leave a feature column")
    return cols


def _split_csv(
    path: Path, option: str, target: str | None, labels: Path | None, labels_option: str, header: bool
) -> tuple[np.ndarray, np.ndarray]:
    names, values = read_csv(path, option, header=header)
    if labels is not None:
        if target is not None:
            raise ValueError(
                f"--target and {labels_option} exclude each other: the labels are either a column of "
                f"{path} (--target) or a separate file ({labels_option})"
            )
        _, y = read_csv(labels, labels_option, header=header)
        X = values
    else:
        if values.shape[1] < 2:
            raise ValueError(
                f"{option} {path} has one column, so no feature is left beside the labels: add the feature "
                f"columns (--target names the label column), or give the labels in {labels_option}"
            )
        cols = _target_columns(target, names, values.shape[1], path)
        y = values[:, cols]
        X = np.delete(values, cols, axis=1)
    y = y[:, 0] if y.shape[1] == 1 else y
    if len(X) != len(y):
        raise ValueError(
            f"{option} {path} has {len(X)} data rows but {labels_option} {labels} has {len(y)}: they must "
            "match"
        )
    return X, y


NPZ_ARRAYS = ("X", "y", "X_test", "y_test")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The numeric arrays X, y (and X_test, y_test when present) of an .npz file, never unpickling."""
    import zipfile

    fix = "save it with numpy.savez(path, X=X, y=y) from numeric arrays"
    try:
        npz = np.load(path, allow_pickle=False)
    except OSError as err:
        raise ValueError(f"--data {path} cannot be read ({err.strerror or err}); {fix}") from None
    except (ValueError, EOFError, zipfile.BadZipFile):  # neither a zip of .npy arrays nor one .npy array
        raise ValueError(f"--data {path} is not a NumPy .npz file; {fix}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"--data {path} holds one array, not the arrays X and y of an .npz file; {fix}")
    arrays = {}
    with npz:
        missing = [name for name in ("X", "y") if name not in npz.files]
        if missing:
            raise ValueError(f"--data {path} lacks array(s) {missing}; it has {npz.files} (need X, y)")
        for name in NPZ_ARRAYS:
            if name not in npz.files:
                continue
            try:
                array = npz[name]
            except ValueError:  # object arrays need pickle, which can run code: never loaded
                raise ValueError(
                    f"--data {path}: array {name!r} holds Python objects (dtype=object), which are never "
                    f"loaded (that would unpickle); {fix}, e.g. {name}=np.asarray({name}, dtype=float)"
                ) from None
            if array.dtype.kind not in "biuf":
                raise ValueError(
                    f"--data {path}: array {name!r} has dtype {array.dtype}, not numbers; {fix}, e.g. "
                    f"{name}=np.asarray({name}, dtype=float)"
                )
            arrays[name] = np.asarray(array, dtype=float)
    return arrays


def load_data(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(X, y, X_test, y_test) from the --data/--labels/--test/--test-labels options, validated."""
    path: Path = args.data
    if not path.exists():
        raise FileNotFoundError(f"--data file not found: {path}")
    header = not getattr(args, "no_header", False)
    X_test = y_test = None
    if path.suffix.lower() == ".npz":
        for option, value in (("--target", args.target), ("--labels", args.labels)):
            if value is not None:
                raise ValueError(f"{option} is for CSV data; the .npz file {path} holds the labels (array y)")
        arrays = _read_npz(path)
        X, y = arrays["X"], arrays["y"]
        X = X[:, None] if X.ndim == 1 else X
        X_test, y_test = arrays.get("X_test"), arrays.get("y_test")
        if X_test is not None and X_test.ndim == 1:
            X_test = X_test[:, None]
    elif path.suffix.lower() in CSV_SUFFIXES:
        X, y = _split_csv(path, "--data", args.target, args.labels, "--labels", header)
    else:
        raise ValueError(f"--data {path}: unsupported file type {path.suffix!r}; use .csv or .npz")
    _check_training_arrays(X, y, f"--data {path}", args.kernel)
    if args.test is not None:
        if X_test is not None:
            raise ValueError(f"--test {args.test}: the --data file already holds X_test; give one test set")
        X_test, y_test = _split_csv(
            args.test, "--test", args.target, args.test_labels, "--test-labels", header
        )
        _check_test_arrays(X, y, X_test, y_test, f"--test {args.test}")
    elif args.test_labels is not None:
        raise ValueError("--test-labels needs --test (the test features)")
    elif X_test is not None:
        _check_test_arrays(X, y, X_test, y_test, f"--data {path}")
    return X, y, X_test, y_test


def _check_finite(array: np.ndarray, what: str) -> None:
    from selfdistill.kernel.estimator import nonfinite_rows

    found = nonfinite_rows(array)
    if found is not None:
        raise ValueError(
            f"{what} contain {found[0]} NaN, empty or infinite value(s), in data row(s) {found[1]} "
            "(0-based, a header row not counted); remove those rows or impute the values"
        )


def _check_training_arrays(X: np.ndarray, y: np.ndarray, source: str, kernel: str) -> None:
    if X.ndim != 2:
        raise ValueError(f"{source}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{source}: y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{source}: X has {len(X)} rows but y has {len(y)}: one label row per sample")
    if len(X) < 2:
        raise ValueError(
            f"{source} has {len(X)} data row(s); a self-distillation chain needs at least 2 training points"
        )
    if X.shape[1] == 0:
        raise ValueError(f"{source}: X has no feature column; give at least one")
    _check_finite(X, f"{source}: the features (X)")
    _check_finite(y, f"{source}: the labels (y)")
    if kernel != "precomputed":
        _check_squares(X, f"{source}: the features (X)", "rescale them, e.g. standardize each column")
    from selfdistill.kernel.rounds import check_label_scale

    try:
        check_label_scale(y)  # the engine's own check, here before the output folder is touched
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    if kernel != "precomputed" and np.all(X == X[0]):
        raise ValueError(
            f"{source}: every training point has the same features, so the kernel sees one point and the "
            "chain can only fit the mean of y; check the feature columns (and --target)"
        )
    if not np.any(y):
        raise ValueError(
            f"{source}: the labels (y) are all zero, so every round's solution is f = 0 and there is nothing "
            "to distill; check the label column (--target) or file (--labels)"
        )


def _check_test_arrays(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray | None, source: str
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
    _check_squares(X_test, f"{source}: the test features (X_test)", "rescale them like the training features")
    _check_squares(y_test, f"{source}: the test labels (y_test)", "rescale them like the training labels")


def _check_squares(array: np.ndarray, what: str, fix: str) -> None:
    """One-line error when squares of ``array`` (finite) overflow float64, i.e. when |value| > ~1e154."""
    with np.errstate(over="ignore"):
        overflow = not np.all(np.isfinite(np.sum(np.square(array), axis=-1)))
    if overflow:
        raise ValueError(
            f"{what} are too large: their squares overflow float64 (largest |value| = "
            f"{float(np.max(np.abs(array))):.3g}); {fix}"
        )


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


def _write_selection(selection, out: Path, plots: bool) -> None:
    """--rounds auto: selection.csv / .json (the criterion per round and the choice), selection.png."""
    selection.to_csv(out / "selection.csv")
    selection.to_json(out / "selection.json")
    if plots:
        atomic_save_figure(selection.plot(), out / "selection.png")


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Each warning raised inside becomes one stderr line (a round-0 collapse is an error, raised later)."""
    from selfdistill.kernel import CollapseWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when an error follows: the warning may explain it
        for w in caught:
            if not issubclass(w.category, CollapseWarning):
                print(f"selfdistill kernel: warning: {w.message}", file=sys.stderr)


def _fit_or_explain(est, X: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
    """Fit; a collapse at round 0 (f = 0: nothing to distill, almost always an epsilon too large for the
    labels) is an error naming the option to change, and so is a kernel matrix that overflows."""
    with _warnings_to_stderr(), np.errstate(over="ignore", invalid="ignore"):  # non-finite: checked in fit
        try:
            est.fit(X, y)
        except ValueError as err:
            if "NaN or infinite entries" in str(err):  # Spectrum.from_gram: the kernel overflowed
                raise ValueError(
                    f"--kernel {args.kernel}: the kernel matrix of --data {args.data} has NaN or infinite "
                    "entries (the kernel overflows on these features); rescale the features, e.g. "
                    "standardize each column, or change --gamma / --degree / --coef0"
                ) from None
            raise ValueError(f"--data {args.data} with --kernel {args.kernel}: {err}") from None
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
    check_options(args)
    with _warnings_to_stderr():
        X, y, X_test, y_test = load_data(args)
    folder = RunFolder(args.out).acquire()  # before the fit: a bad or busy --out costs no computation
    try:
        if not args.overwrite:
            folder.refuse_if_not_empty("use --overwrite to replace it, or choose another --out")
        result, est, test_rows, plots, theory_text = _run(args, folder, X, y, X_test, y_test)
    except BaseException:
        folder.abandon()  # a failed run that created the folder leaves no trace
        raise
    folder.release()
    print(result)
    if est.selection_ is not None:
        print(est.selection_)
    if test_rows is not None:
        print("test set: " + "  ".join(f"round {r['round']}: MSE {r['test_mse']:.5g}" for r in test_rows))
    print(theory_text)
    print(f"results written to {folder.path} ({len(plots)} plots)")
    return 0


def _run(
    args: argparse.Namespace,
    folder: RunFolder,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None,
    y_test: np.ndarray | None,
) -> tuple[Any, Any, list[dict[str, float]] | None, list[Path], str]:
    """Fit, then (the folder cleared first with --overwrite) write every file of the run atomically;
    returns (ChainResult, fitted estimator, test rows or None, plot paths, theory text)."""
    from tqdm.auto import tqdm

    from selfdistill.kernel import KernelSelfDistillation
    from selfdistill.kernel.plots import save_chain_plots

    out = folder.path
    nystroem = args.solver == "nystroem"
    est = KernelSelfDistillation(
        kernel=args.kernel, epsilon=args.epsilon, epsilon_mode=args.epsilon_mode, n_rounds=args.rounds,
        alpha=args.alpha, per_output_c=args.per_output_c, gamma=args.gamma, degree=args.degree,
        coef0=args.coef0, max_rounds=args.max_rounds, xi=args.xi, selection=args.selection,
        n_folds=args.n_folds, holdout_fraction=args.holdout_fraction, random_state=args.random_state,
    )  # fmt: skip
    if nystroem:
        est.set_params(
            solver="nystroem", n_components=args.n_components, center_selection=args.center_selection
        )
    K = len(X)
    stages = ["kernel matrix + eigendecomposition + rounds", "test predictions", "theory", "plots", "files"]
    with tqdm(total=len(stages), desc="selfdistill kernel", disable=None if K >= 1000 else True) as bar:
        bar.set_postfix_str(stages[0])
        _fit_or_explain(est, X, y, args)
        result = est.result_
        bar.update()
        test_rows = None
        if X_test is not None and y_test is not None:
            test_rows = _test_rows(est, X_test, y_test)
        bar.update()
        if args.overwrite:
            folder.clear()
        with folder.writing(rerun="then run the command again with --overwrite"):
            theory_text = _write_theory(result, out)
            bar.update()
            plots = []
            if not args.no_plots and result.n_rounds > 0:
                kernel_fn = None if args.kernel == "precomputed" or nystroem else est._kernel
                plots = save_chain_plots(result, out, x_train=X, kernel=kernel_fn)
            bar.update()
            save_vectors = args.eigenvectors == "yes" or (
                args.eigenvectors == "auto" and K <= EIGENVECTORS_AUTO_LIMIT
            )
            result.to_json(out / "result.json", include_eigenvectors=save_vectors)
            result.to_csv(out / "rounds.csv")
            if est.selection_ is not None:
                _write_selection(est.selection_, out, plots=not args.no_plots)
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
    return result, est, test_rows, plots, theory_text
