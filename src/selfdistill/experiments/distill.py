"""Teacher -> student distillation with PTLoss and its baselines, from a YAML config.

Every config key (type, default, meaning): `selfdistill config distill`.

Seed axes: ``data.seeds`` (splits, label-noise draw) x ``teacher.seeds`` (the teacher's initialization and
batch order) give the TEACHERS of the run (one per pair, each in ``teachers/data{D}_teacher{T}/``); every
teacher trains every method for every student seed (``seeds``). A unit is (teacher, student seed); every
comparison of two methods is paired over units, with the interval over teachers beside it (units of one
teacher share it, so that is the honest one when teachers vary).

Stages per teacher (each a function; every result lands in its folder; an interrupted run resumes where it
stopped):

  1. teacher (:func:`stage_teacher`): train it on the labeled training split, or load it
     (``teacher.checkpoint``); ``teacher.pt`` carries the sha256 of its weights and the fingerprint of the
     settings it depends on (its data and teacher seeds included). The transfer set (section ``transfer``)
     is the teacher's own training inputs (``source: train``), a part of the training pool kept from the
     teacher whose labels are dropped (``held_out``), or unlabeled inputs from a file (``file``, checked
     against the statistics of the teacher's training inputs: a gross mismatch gets a warning);
  2. teacher outputs (:func:`stage_teacher_outputs`): its probabilities on the transfer set and the
     validation split, and its diagnostics: accuracy on the labels it was trained on (noisy under label
     noise) and on the clean ones, clean validation and test accuracy, calibration on validation and test
     (ECE with ``selfdistill.calibration.DEFAULT_BINS`` equal-width bins, NLL, Brier);
  3. search (:func:`stage_search`): the PTLoss perturbation search on the VALIDATION split, scoring the proxy
     teacher of the loss the students train with (``ptloss.temperature``, a value or a grid searched
     jointly with eps, and ``ptloss.form``); every (candidate, T) row reports its convexity and convergence,
     and only eligible rows are selected (search.csv / search.json / search.png);
  4. students (:func:`stage_students`): the same student, seeds and budget trained on the transfer set (no
     labels are used) with each method of :func:`method_plan`: KL at T = 1, temperature KD for each T, the
     label-smoothed teacher, PTLoss with a random eps, with the selected (eps, T), with the eps selected at
     each T of the grid (``ptloss_T<T>``, to pair with ``kd_T<T>``); methods that do not depend on the
     temperature are trained once (runs.json);
  5. PTLoss students per search row (:func:`stage_candidates`), each for every student seed: rows spread
     over the eligible scores plus the selected row and eps = 0 (``candidate_students``: does the score
     predict the student's accuracy?), and the rows of the validation-accuracy selection (eps = 0 and the
     first ``val_selection.candidates`` eligible random candidates at every T): the (eps, T) whose students
     have the best mean validation accuracy is the method ``ptloss_val_selected`` (candidates.json).

Then the summary (:func:`stage_summary`): runs.csv (every student), results.csv (per method: mean, std and
95 % interval of the test accuracy over units, validation accuracy), paired.csv (every pair of methods:
mean paired difference with scipy's t interval, a bootstrap interval for small samples, and the interval
over teachers), teachers.csv (diagnostics and search per teacher), candidates.csv, results.json, paired.png
(each method against KL and the best baseline) and candidates.png. The printed summary names the key
comparisons and the run's wall time.

Saved teachers and per-run results are used again only when they verify (their sha256 matches, they were
written with the same settings and, for students, from the same teacher weights); otherwise they are
recomputed and one line on stderr says why. A ``teacher.checkpoint`` given in the config that fails its
hash is an error. The folder policy (lock, --overwrite, resume) is the one of ``selfdistill train``
(:mod:`selfdistill.experiments.runs`); the config schema is
:class:`selfdistill.experiments.config.DistillConfig`.

PTLoss is this project's definition (selfdistill.ptloss; Zhang et al. 2024, see docs/specs/ptloss.md).
Shipped configs: distill_digits (CPU, clean labels), distill_digits_noisy (CPU, 40 % label noise, an
overconfident teacher), distill_cifar100 (GPU; needs --data-root).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdistill.experiments.config import (
    MIN_TRAINING_EXAMPLES,
    DistillConfig,
    add_run_arguments,
    distill_config_from_dict,
    load_distill_config,
    result_settings,
)
from selfdistill.experiments.runs import check_resumable, claim_run_folder
from selfdistill.io import atomic_save_figure, atomic_write_verified_json, json_sha256, read_verified_json

RUN_COLUMNS = (
    "data_seed",
    "teacher_seed",
    "seed",
    "method",
    "candidate",
    "temperature",
    "val_accuracy",
    "test_accuracy",
    "train_loss",
    "seconds",
)
RESULT_COLUMNS = (
    "method",
    "description",
    "n_seeds",
    "n_teachers",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "val_accuracy_mean",
    "val_accuracy_std",
)
# per (teacher, search row, student seed): the PTLoss students of stage 5
CANDIDATE_RUN_COLUMNS = (
    "data_seed",
    "teacher_seed",
    "row",
    "candidate",
    "temperature",
    "seed",
    "val_accuracy",
    "test_accuracy",
    "train_loss",
    "seconds",
)
# per (teacher, search row): the row's search columns beside its students' mean accuracy
CANDIDATE_COLUMNS = (
    "data_seed",
    "teacher_seed",
    "row",
    "candidate",
    "temperature",
    "score",
    "eps_shift_tv",
    "convex",
    "converged",
    "eligible",
    "role",
    "n_seeds",
    "test_accuracy_mean",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "val_accuracy_mean",
)
TEACHER_COLUMNS = (
    "data_seed",
    "teacher_seed",
    "train_accuracy",
    "train_accuracy_clean",
    "val_accuracy",
    "test_accuracy",
    "val_ece",
    "val_nll",
    "val_brier",
    "test_ece",
    "test_nll",
    "test_brier",
    "ece_bins",
    "transfer_accuracy",
    "transfer_accuracy_clean",
    "selected_candidate",
    "selected_temperature",
    "selected_score",
    "baseline_score",
    "n_rows",
    "n_eligible",
    "n_nonconvex",
    "n_not_converged",
    "val_selected_candidate",
    "val_selected_temperature",
)
# a transfer file whose inputs differ from the teacher's training inputs by more than this is warned about:
# mean shifted by more than one training standard deviation, standard deviation off by more than 3x, or
# values beyond the training range widened by half its span on either side
_SHIFT_STDS, _SCALE_RATIO, _RANGE_SLACK = 1.0, 3.0, 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, example="distill_digits", set_example="student.optimizer.steps=50")


def main(args: argparse.Namespace) -> int:
    config = load_distill_config(args.config, args.overrides)
    if args.data_root is not None:
        config.data.root = str(args.data_root)
    out = args.out if args.out is not None else Path("results") / config.name
    summary = run_distillation(config, out, overwrite=args.overwrite, plots=not args.no_plots)
    print(format_results(summary))
    print(f"results written to {out}")
    return 0


def parse_config(raw: dict[str, Any], source: str = "config") -> DistillConfig:
    """Validate a raw mapping into a :class:`DistillConfig` (the schema in selfdistill.experiments.config)."""
    return distill_config_from_dict(raw, source)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


# ------------------------------------------------------------------------------------------ transfer set


def transfer_split(n: int, fraction: float, seed: int) -> tuple[Any, Any]:
    """(teacher indices, transfer indices) of a training pool of ``n``: a seeded random
    ``round(fraction * n)`` examples form the transfer set, the rest train the teacher; both sorted,
    disjoint, covering 0..n-1, each at least :data:`MIN_TRAINING_EXAMPLES` long."""
    import numpy as np

    m = int(round(fraction * n))
    if min(m, n - m) < MIN_TRAINING_EXAMPLES:
        raise ValueError(
            f"transfer.fraction={fraction:g} of {n} training examples leaves {m} for the transfer set and "
            f"{n - m} for the teacher; each needs at least {MIN_TRAINING_EXAMPLES} (choose a fraction nearer "
            "0.5, or more training data)"
        )
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A5F])).permutation(n)
    return np.sort(order[m:]), np.sort(order[:m])


def load_transfer_inputs(path: str | Path, input_shape: tuple[int, ...]) -> Any:
    """Unlabeled transfer inputs from ``path`` as a float32 tensor ``(N, *input_shape)``: a .npy array, an
    .npz with an array ``x`` (or its only array), or a .pt tensor; preprocessed like the data set's inputs
    (e.g. saved from ``load_data(...).x_test``)."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"transfer.path: {path} does not exist; give a .npy, .npz or .pt file of inputs"
        )
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt"):
        raise ValueError(
            f"transfer.path: {path} is not a .npy, .npz or .pt file; save the inputs with numpy.save, "
            "numpy.savez (array x) or torch.save"
        )
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "x" not in names and len(names) != 1:
                    raise ValueError(f"{path} holds arrays {names}; name the inputs 'x'")
                array = archive["x" if "x" in names else names[0]]
        else:
            array = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(array, torch.Tensor):
                raise ValueError(f"{path} holds a {type(array).__name__}, not a tensor")
            array = array.numpy()
    except ValueError as err:
        if "name the inputs" in str(err) or "not a tensor" in str(err):
            raise ValueError(f"transfer.path: {err}") from None
        raise ValueError(_not_an_array_file(path, err)) from None
    except Exception as err:  # unpickling errors, zip errors, ...: all mean "not such a file"
        raise ValueError(_not_an_array_file(path, err)) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"transfer.path: {path} holds {kind} values, expected numbers")
    x = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] == 0:
        raise ValueError(
            f"transfer.path: {path} holds inputs of shape {tuple(x.shape)}; expected (N, "
            f"{', '.join(str(d) for d in input_shape)}) with N >= 1, preprocessed like the data set's inputs"
        )
    if x.shape[0] < MIN_TRAINING_EXAMPLES:
        raise ValueError(
            f"transfer.path: {path} holds {x.shape[0]} inputs, fewer than {MIN_TRAINING_EXAMPLES} to train a "
            "student on; give more"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"transfer.path: {path} contains NaN or infinite inputs; remove or impute them")
    return x


def _not_an_array_file(path: Path, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return (
        f"transfer.path: {path} is not a NumPy (.npy/.npz) or torch (.pt) file of numbers ({first}); "
        "save the "
        "inputs with numpy.save or torch.save"
    )


def input_mismatch(reference: Any, inputs: Any) -> list[str]:
    """What differs grossly between ``inputs`` and the ``reference`` inputs (scalar mean, standard deviation
    and range over all entries; thresholds: module constants); empty when they look alike."""
    ref = reference.double()
    new = inputs.double()
    ref_mean, ref_std, ref_lo, ref_hi = (float(f()) for f in (ref.mean, ref.std, ref.min, ref.max))
    mean, std, lo, hi = (float(f()) for f in (new.mean, new.std, new.min, new.max))
    problems = []
    unit = ref_std if ref_std > 0 else max(ref_hi - ref_lo, 1.0)
    if abs(mean - ref_mean) > _SHIFT_STDS * unit:
        problems.append(f"mean {mean:.3g} vs {ref_mean:.3g}")
    if ref_std > 0 and not (1 / _SCALE_RATIO <= std / ref_std <= _SCALE_RATIO):
        problems.append(f"standard deviation {std:.3g} vs {ref_std:.3g}")
    slack = _RANGE_SLACK * (ref_hi - ref_lo)
    if lo < ref_lo - slack or hi > ref_hi + slack:
        problems.append(f"range [{lo:.3g}, {hi:.3g}] vs [{ref_lo:.3g}, {ref_hi:.3g}]")
    return problems


@dataclass
class TransferSet:
    """The teacher's training examples and the student's (unlabeled) transfer inputs. ``teacher_y`` are the
    labels the teacher is trained on (noisy under label noise), ``teacher_clean_y`` the same examples'
    clean labels; ``labels`` / ``clean_labels`` exist only for ``held_out`` (reported, never trained on)."""

    teacher_x: Any
    teacher_y: Any
    x: Any
    labels: Any
    source: str
    teacher_clean_y: Any = None
    clean_labels: Any = None


def transfer_set(config: DistillConfig, data: Any, data_seed: int | None = None) -> TransferSet:
    """The transfer set of the ``transfer`` section (module docstring); ``held_out`` splits the training
    pool with ``data_seed`` (default: the first data seed)."""
    import torch

    transfer = config.transfer
    clean = getattr(data, "clean_y_train", data.y_train)
    if transfer.source == "train":
        return TransferSet(data.x_train, data.y_train, data.x_train, None, "train", clean)
    if transfer.source == "held_out":
        seed = config.data.seed_list[0] if data_seed is None else data_seed
        teacher_idx, transfer_idx = transfer_split(data.num_train, transfer.fraction, seed)
        teacher_idx, transfer_idx = torch.as_tensor(teacher_idx), torch.as_tensor(transfer_idx)
        return TransferSet(
            data.x_train[teacher_idx],
            data.y_train[teacher_idx],
            data.x_train[transfer_idx],
            data.y_train[transfer_idx],
            "held_out",
            clean[teacher_idx],
            clean[transfer_idx],
        )
    x = load_transfer_inputs(transfer.path, data.input_shape)
    problems = input_mismatch(data.x_train, x)
    if problems:
        warnings.warn(
            f"transfer.path: the inputs of {transfer.path} do not look preprocessed like the teacher's "
            "training "
            f"inputs ({'; '.join(problems)}); save them after the same preprocessing (e.g. from "
            "selfdistill.nn.data.load_data(...).x_test), or the teacher's outputs on them mean little",
            UserWarning,
            stacklevel=2,
        )
    return TransferSet(data.x_train, data.y_train, x, None, "file", clean)


# ------------------------------------------------------------------------------------- settings (hashes)


def teacher_settings(config: DistillConfig, data_seed: int | None = None, teacher_seed: int | None = None
                     ) -> dict[str, Any]:  # fmt: skip
    """The settings the teacher's weights depend on (a subset of :func:`result_settings`, plus the examples
    it is trained on and its data and teacher seeds), stored as ``teacher.pt``'s fingerprint."""
    settings = {
        key: value
        for key, value in result_settings(config).items()
        if key.startswith(("data.", "teacher.", "device")) and key != "teacher.checkpoint"
    }
    held_out = config.transfer.source == "held_out"
    settings["teacher_examples"] = f"held_out {config.transfer.fraction!r}" if held_out else "train"
    settings["data_seed"] = int(config.data.seed_list[0] if data_seed is None else data_seed)
    settings["teacher_seed"] = int(config.teacher.seed_list[0] if teacher_seed is None else teacher_seed)
    return settings


def student_settings(config: DistillConfig, data_seed: int | None = None, teacher_seed: int | None = None
                     ) -> dict[str, Any]:  # fmt: skip
    """The settings every student result depends on besides its teacher's weights (stored with runs.json and
    candidates.json); the teacher itself is matched by the sha256 of its weights."""
    settings = {k: v for k, v in result_settings(config).items() if k != "teacher.checkpoint"}
    settings["data_seed"] = int(config.data.seed_list[0] if data_seed is None else data_seed)
    settings["teacher_seed"] = int(config.teacher.seed_list[0] if teacher_seed is None else teacher_seed)
    return settings


def teacher_folder(out: Path, data_seed: int, teacher_seed: int) -> Path:
    """The folder of one teacher (one data seed and teacher seed): teacher.pt, the search, its students."""
    return Path(out) / "teachers" / f"data{int(data_seed)}_teacher{int(teacher_seed)}"


# ------------------------------------------------------------------------------------------------ checks


def check_before_training(config: DistillConfig, data: Any) -> None:
    """Build every model and loss the run will use once and draw the search candidates, so that a bad
    setting (model arguments, search or ptloss options) fails with its section named before any training."""
    import torch

    from selfdistill.nn.losses import check_loss_fits
    from selfdistill.nn.methods import build_method
    from selfdistill.ptloss import sample_candidates
    from selfdistill.ptloss.search import CRITERIA

    for part in ("teacher", "student"):
        model = getattr(config, part).model
        try:
            with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
                model.factory(data)()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{part}.model {model.name!r} {model.kwargs}: {err}") from None
    s = config.search
    try:
        if s.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {s.criterion!r}")
        candidates = sample_candidates(
            data.num_classes,
            s.M,
            2,
            scale=s.scale,
            distribution=s.distribution,
            seed=s.seed,
            class_wise=s.class_wise,
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"search: {err}") from None
    try:
        for temperature in config.ptloss.temperatures:
            method = build_method(
                "ptloss", epsilon=candidates[1], temperature=temperature, form=config.ptloss.form
            )
            check_loss_fits(method.loss, data.num_classes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ptloss: {err}") from None


# -------------------------------------------------------------------------------------- 1. the teacher


@dataclass
class Teacher:
    """The frozen teacher, the sha256 of its weights and where it came from."""

    model: Any
    sha256: str
    origin: str


def _load_given_teacher(config: DistillConfig, data: Any) -> Teacher | None:
    """The teacher of ``teacher.checkpoint`` (None when not set), verified: a file that fails its hash is an
    error; one without a hash (older format) or trained with other settings is used with a warning."""
    from selfdistill.nn.checkpoint import read_verified_checkpoint, state_dict_sha256

    if not config.teacher.checkpoint:
        return None
    path = Path(config.teacher.checkpoint).expanduser()
    read = read_verified_checkpoint(path, settings=teacher_settings(config), weights_key="model")
    fix = (
        "point it at a teacher.pt written by `selfdistill distill`, or remove teacher.checkpoint to train one"
    )
    if read.kind == "absent":
        raise FileNotFoundError(f"teacher.checkpoint: {path} does not exist; {fix}")
    if read.kind in ("unreadable", "damaged"):
        raise ValueError(f"teacher.checkpoint: {path} {read.problem}; {fix}")
    if read.kind in ("unverified", "foreign"):
        _stderr(f"teacher.checkpoint: {path} {read.problem}; using it as given")
    model = _teacher_model(config, data, read.payload["model"], path, config.teacher.seed_list[0])
    return Teacher(
        model, read.weights_sha256 or state_dict_sha256(read.payload["model"]), f"loaded from {path}"
    )


def _teacher_model(config: DistillConfig, data: Any, weights: Any, path: Path, teacher_seed: int) -> Any:
    from selfdistill.nn.chain import derive_seed, fresh_model

    model = fresh_model(config.teacher.model.factory(data), derive_seed(teacher_seed, 0, "init"))
    try:
        model.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"teacher.checkpoint: {path} does not hold weights for teacher.model "
            f"{config.teacher.model.name!r} ({str(err).splitlines()[0]}); point it at a teacher.pt written "
            "by `selfdistill distill` with the "
            "same teacher.model"
        ) from None
    return model


def stage_teacher(
    config: DistillConfig,
    data: Any,
    transfer: TransferSet,
    out: Path,
    device: Any,
    given: Teacher | None,
    *,
    data_seed: int | None = None,
    teacher_seed: int | None = None,
) -> Teacher:
    """Stage 1: the given teacher, or ``out/teacher.pt`` when it verifies, or a newly trained teacher (seed
    ``teacher_seed``, saved to ``out/teacher.pt`` with its hashes). Returns it frozen (eval mode, no
    gradients)."""
    import torch

    from selfdistill.nn.chain import derive_seed, fresh_model, train_round
    from selfdistill.nn.checkpoint import read_verified_checkpoint, save_verified_checkpoint
    from selfdistill.nn.losses import SoftCrossEntropyLoss

    teacher_seed = config.teacher.seed_list[0] if teacher_seed is None else int(teacher_seed)
    teacher = given
    path = out / "teacher.pt"
    settings = teacher_settings(config, data_seed, teacher_seed)
    if teacher is None:
        read = read_verified_checkpoint(path, settings=settings, weights_key="model")
        if read.ok:
            model = fresh_model(config.teacher.model.factory(data), derive_seed(teacher_seed, 0, "init"))
            try:
                model.load_state_dict(read.payload["model"])
                teacher = Teacher(model, read.weights_sha256, f"loaded from {path} (sha256 verified)")
            except (KeyError, TypeError, RuntimeError):
                _stderr(f"teacher {path}: does not fit teacher.model; retraining the teacher")
        elif read.kind != "absent":
            _stderr(f"teacher {path}: {read.problem}; retraining the teacher")
    if teacher is None:
        start = time.perf_counter()
        onehot = torch.nn.functional.one_hot(transfer.teacher_y, data.num_classes).float()
        model, _ = train_round(  # round 0 of the teacher's seed (the API's one way to train a model)
            config.teacher.model.factory(data),
            transfer.teacher_x,
            onehot,
            SoftCrossEntropyLoss(),
            config.teacher.optimizer.to_train_spec(),
            seed=teacher_seed,
            round_index=0,
            device=device,
            augment=data.augment,
        )
        sha = save_verified_checkpoint(path, model.state_dict(), settings=settings, weights_key="model")
        teacher = Teacher(model, sha, f"trained in {time.perf_counter() - start:.1f} s")
    teacher.model.requires_grad_(False)
    teacher.model.eval()
    return teacher


# -------------------------------------------------------------------------------- 2. the teacher's outputs


@dataclass
class TeacherOutputs:
    """The teacher's probabilities on the transfer set and the validation split, and its diagnostics
    (``metrics``: accuracies and calibration, see :func:`stage_teacher_outputs`)."""

    transfer_probs: Any
    val_probs: Any
    metrics: dict[str, float]
    transfer_info: dict[str, Any]


def stage_teacher_outputs(teacher: Teacher, data: Any, transfer: TransferSet, device: Any) -> TeacherOutputs:
    """Stage 2: one evaluation pass of the teacher over each split it is needed on, and its diagnostics:
    ``train_accuracy`` against the labels it was trained on (noisy ones under label noise),
    ``train_accuracy_clean`` against the clean labels, ``val_*`` and ``test_*`` (clean labels): accuracy,
    ECE (``ece_bins`` equal-width bins), NLL and Brier score (:mod:`selfdistill.calibration`)."""
    import torch

    from selfdistill.calibration import DEFAULT_BINS, calibration_report
    from selfdistill.nn.training import accuracy, predict_logits

    logits = {
        split: predict_logits(teacher.model, getattr(data, f"x_{split}"), device=device)
        for split in ("val", "test")
    }
    logits["train"] = predict_logits(teacher.model, transfer.teacher_x, device=device)
    metrics: dict[str, Any] = {"train_accuracy": accuracy(logits["train"], transfer.teacher_y)}
    clean = transfer.teacher_clean_y if transfer.teacher_clean_y is not None else transfer.teacher_y
    metrics["train_accuracy_clean"] = accuracy(logits["train"], clean)
    for split in ("val", "test"):
        probs = torch.softmax(logits[split].double(), -1).numpy()
        report = calibration_report(probs, getattr(data, f"y_{split}").numpy(), DEFAULT_BINS)
        metrics[f"{split}_accuracy"] = report["accuracy"]
        for key in ("ece", "nll", "brier"):
            metrics[f"{split}_{key}"] = report[key]
    metrics["ece_bins"] = DEFAULT_BINS
    transfer_logits = (
        logits["train"]
        if transfer.x is transfer.teacher_x
        else predict_logits(teacher.model, transfer.x, device=device)
    )
    info: dict[str, Any] = {
        "source": transfer.source,
        "size": int(transfer.x.shape[0]),
        "teacher_train_size": int(transfer.teacher_x.shape[0]),
    }
    if transfer.labels is not None:  # held out: its labels exist but no model is trained on them; report only
        info["teacher_accuracy"] = accuracy(transfer_logits, transfer.labels)
        if transfer.clean_labels is not None:
            info["teacher_accuracy_clean"] = accuracy(transfer_logits, transfer.clean_labels)
        info["label_noise"] = float(getattr(data, "label_noise", 0.0))
    return TeacherOutputs(
        transfer_probs=torch.softmax(transfer_logits.double(), -1).float(),
        val_probs=torch.softmax(logits["val"].double(), -1),
        metrics=metrics,
        transfer_info=info,
    )


# ---------------------------------------------------------------------------------------------- 3. search


def stage_search(config: DistillConfig, outputs: TeacherOutputs, data: Any, out: Path, plots: bool) -> Any:
    """Stage 3: the PTLoss perturbation search on the labeled validation split, scoring the proxy of the loss
    the students train with: every T of ``ptloss.temperature`` (a grid is searched jointly with eps) and
    ``ptloss.form`` (search.csv / .json / .png)."""
    from selfdistill.ptloss import select_perturbation

    s = config.search
    search = select_perturbation(
        outputs.val_probs,
        data.y_val,
        s.M,
        s.n_candidates,
        temperature=config.ptloss.temperatures,
        form=config.ptloss.form,
        scale=s.scale,
        distribution=s.distribution,
        seed=s.seed,
        criterion=s.criterion,
        class_wise=s.class_wise,
        require_convex=s.require_convex,
    )
    search.to_csv(out / "search.csv")
    search.to_json(out / "search.json")
    if plots:
        search.plot(path=out / "search.png")
    return search


# -------------------------------------------------------------------------------------------- 4. students


def _first_eligible_random(search: Any, temperature: float, count: int = 1) -> list[int]:
    """The first ``count`` random candidates (index >= 1) whose row at ``temperature`` is eligible."""
    eligible = search.eligible
    picks = []
    for candidate in range(1, search.n_candidates):
        if eligible[search.row(candidate, temperature)]:
            picks.append(candidate)
            if len(picks) == count:
                break
    return picks


def best_row_at(search: Any, temperature: float) -> int:
    """The eligible row of lowest score among the rows at ``temperature`` (ties: the lowest row)."""
    import numpy as np

    at = (search.table["temperature"] == temperature) & search.eligible
    if not at.any():
        raise ValueError(f"search: no eligible candidate at T = {temperature:g}")
    return int(np.argmin(np.where(at, search.scores, np.inf)))


def ptloss_method(search: Any, row: int, name: str, label: str) -> Any:
    """The PTLoss method of search row ``row``: its (eps, T) and the search's form, the loss whose proxy the
    row scored (``search.ptloss_kwargs(row)``)."""
    from selfdistill.nn.methods import build_method

    return build_method("ptloss", **search.ptloss_kwargs(row), name=name, label=label)


def ptloss_rows(config: DistillConfig, search: Any) -> list[tuple[str, int, str]]:
    """``(method name, search row, description)`` of the PTLoss methods of stage 4 switched on: a random eps
    (the first eligible random candidate at the selected T), the selected (eps, T), and with a temperature
    grid the eps selected at each T."""
    m = config.methods
    best_t = search.best_temperature
    rows: list[tuple[str, int, str]] = []
    if m.ptloss_random:
        random = _first_eligible_random(search, best_t)
        if random:
            rows.append(("ptloss_random", search.row(random[0], best_t), "first eligible random eps, at the "
                         "selected T"))  # fmt: skip
        else:
            _stderr("methods.ptloss_random: no eligible random candidate at the selected T; skipped")
    if m.ptloss_selected:
        rows.append(("ptloss_selected", search.best_index,
                     f"(eps, T) of the best proxy teacher (validation {search.criterion})"))  # fmt: skip
    if m.ptloss_per_temperature and len(search.temperatures) > 1:
        for t in search.temperatures:
            label = f"eps of the best proxy at T = {t:g}"
            rows.append((f"ptloss_T{t:g}", best_row_at(search, t), label))
    return rows


def method_plan(config: DistillConfig, search: Any) -> list[Any]:
    """The ``DistillationMethod`` (:mod:`selfdistill.nn.methods`) of every method of stage 4 switched on, in
    table order; the PTLoss ones are those of :func:`ptloss_rows` (``ptloss_val_selected`` comes from
    stage 5). KL, label smoothing and KD do not depend on the PTLoss temperature grid: one each."""
    from selfdistill.nn.methods import build_method

    m = config.methods
    plan = []
    if m.kl:
        plan.append(build_method("kl"))
    plan += [build_method("kd", temperature=t) for t in m.temperatures]
    plan += [build_method("label_smoothing", smoothing=a) for a in m.label_smoothing]
    plan += [ptloss_method(search, row, name, label) for name, row, label in ptloss_rows(config, search)]
    return plan


class StudentTrainer:
    """Trains the configured student on the transfer set with a given loss and targets, for one seed."""

    def __init__(self, config: DistillConfig, data: Any, transfer: TransferSet, device: Any) -> None:
        self.factory = config.student.model.factory(data)
        self.spec = config.student.optimizer.to_train_spec()
        self.data, self.transfer, self.device = data, transfer, device

    def __call__(self, loss_fn: Any, targets: Any, seed: int) -> dict[str, float]:
        from selfdistill.nn.chain import train_round
        from selfdistill.nn.training import accuracy, predict_logits

        data, device = self.data, self.device
        student, result = train_round(  # a student is round 1 of its seed, as in selfdistill.nn.distill
            self.factory,
            self.transfer.x,
            targets,
            loss_fn,
            self.spec,
            seed=seed,
            round_index=1,
            device=device,
            augment=data.augment,
        )
        return {
            "val_accuracy": accuracy(predict_logits(student, data.x_val, device=device), data.y_val),
            "test_accuracy": accuracy(predict_logits(student, data.x_test, device=device), data.y_test),
            "train_loss": result.last_batch_loss,
            "seconds": result.seconds,
        }


class VerifiedRows:
    """Per-run result rows kept in a JSON file with their sha256, the fingerprint of the settings and the
    teacher's sha256: rows read back are used only when all three match (else recomputed, said on stderr)."""

    def __init__(self, path: Path, settings: dict[str, Any], teacher_sha256: str) -> None:
        self.path = path
        self.header = {"fingerprint": json_sha256(settings), "teacher_sha256": teacher_sha256}
        content, problem = read_verified_json(path)
        if content is not None and content.get("fingerprint") != self.header["fingerprint"]:
            content, problem = None, "was written by a run with different settings"
        elif content is not None and content.get("teacher_sha256") != teacher_sha256:
            content, problem = None, "was computed from another teacher (its sha256 differs)"
        if problem is not None:
            _stderr(f"{path}: {problem}; recomputing its rows")
        self.rows: list[dict[str, Any]] = list(content["rows"]) if content is not None else []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        atomic_write_verified_json(self.path, {**self.header, "rows": self.rows})  # finished work is kept



def stage_students(
    config: DistillConfig,
    plan: list[Any],
    outputs: TeacherOutputs,
    trainer: StudentTrainer,
    teacher: Teacher,
    out: Path,
    log: Any,
    *,
    data_seed: int | None = None,
    teacher_seed: int | None = None,
    search: Any = None,
) -> list[dict[str, Any]]:
    """Stage 4: every method x student seed (``out/runs.json``, kept after each student). Rows carry the
    teacher's seeds and, for PTLoss methods, the search row's candidate and temperature."""
    d = config.data.seed_list[0] if data_seed is None else int(data_seed)
    t = config.teacher.seed_list[0] if teacher_seed is None else int(teacher_seed)
    runs = VerifiedRows(out / "runs.json", student_settings(config, d, t), teacher.sha256)
    done = {(r["method"], r["seed"]) for r in runs.rows}
    where = {name: row for name, row, _ in ptloss_rows(config, search)} if search is not None else {}
    for method in plan:
        targets = method.targets(outputs.transfer_probs)
        row = where.get(method.name)
        detail = {
            "candidate": int(search.table["candidate"][row]) if row is not None else None,
            "temperature": float(search.table["temperature"][row]) if row is not None else None,
        }
        for seed in config.seed_list:
            if (method.name, seed) in done:
                continue
            result = trainer(method.loss, targets, seed)
            runs.add(
                {"data_seed": d, "teacher_seed": t, "seed": seed, "method": method.name, **detail, **result}
            )
            log(f"  {method.name:>20} seed {seed}: test accuracy {result['test_accuracy']:.4f}")
    return [r for r in runs.rows if r["seed"] in config.seed_list]


# ------------------------------------------------------------------ 5. PTLoss students per search row


def candidate_roles(config: DistillConfig, search: Any) -> dict[int, str]:
    """``{search row: role}`` of the rows whose PTLoss students stage 5 trains: ``candidate_students`` rows
    spread over the eligible scores (``spread``), the selected row (``selected``) and eps = 0 at the
    selected T (``eps = 0``); with ``methods.ptloss_val_selected``, eps = 0 and the first
    ``val_selection.candidates`` eligible random candidates at every T (``val_selection``). A row with
    several roles keeps them joined by ``+``."""
    import numpy as np

    roles: dict[int, list[str]] = {}
    count = config.candidate_students
    if count:
        eligible = np.flatnonzero(search.eligible)
        order = eligible[np.argsort(search.scores[eligible], kind="stable")]
        for q in np.linspace(0, len(order) - 1, min(count, len(order))):
            roles.setdefault(int(order[int(round(q))]), []).append("spread")
        roles.setdefault(search.best_index, []).append("selected")
        if search.zero_rows():
            roles.setdefault(search.row(0, search.best_temperature), []).append("eps = 0")
    if config.methods.ptloss_val_selected:
        for t in search.temperatures:
            picks = [0] + _first_eligible_random(search, t, config.val_selection.candidates)
            for candidate in picks:
                roles.setdefault(search.row(candidate, t), []).append("val_selection")
    return {row: "+".join(dict.fromkeys(names)) for row, names in sorted(roles.items())}


def stage_candidates(
    config: DistillConfig,
    search: Any,
    outputs: TeacherOutputs,
    trainer: StudentTrainer,
    teacher: Teacher,
    out: Path,
    log: Any,
    *,
    data_seed: int | None = None,
    teacher_seed: int | None = None,
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Stage 5: a PTLoss student per row of :func:`candidate_roles` and student seed (``out/candidates.json``,
    kept after each student); returns the per-seed rows (``CANDIDATE_RUN_COLUMNS``) and the roles."""
    d = config.data.seed_list[0] if data_seed is None else int(data_seed)
    t = config.teacher.seed_list[0] if teacher_seed is None else int(teacher_seed)
    roles = candidate_roles(config, search)
    if not roles:
        return [], {}
    saved = VerifiedRows(out / "candidates.json", student_settings(config, d, t), teacher.sha256)
    done = {(r["row"], r["seed"]) for r in saved.rows}
    for row in roles:
        method = ptloss_method(search, row, f"row_{row}", f"search row {row}")
        targets = method.targets(outputs.transfer_probs)
        for seed in config.seed_list:
            if (row, seed) in done:
                continue
            result = trainer(method.loss, targets, seed)
            saved.add(
                {
                    "data_seed": d,
                    "teacher_seed": t,
                    "row": row,
                    "candidate": int(search.table["candidate"][row]),
                    "temperature": float(search.table["temperature"][row]),
                    "seed": seed,
                    **result,
                }
            )
        log(f"  {'search row ' + str(row):>20} ({roles[row]}): done")
    rows = [r for r in saved.rows if r["row"] in roles and r["seed"] in config.seed_list]
    return rows, roles


def val_selected(
    candidate_rows: list[dict[str, Any]], roles: dict[int, str]
) -> tuple[int | None, list[dict[str, Any]]]:
    """The (eps, T) of the validation-accuracy selection: among the ``val_selection`` rows, the one whose
    students have the highest mean validation accuracy over the student seeds (ties: the lowest row, so
    eps = 0 and lower T first). Returns the row and its students as rows of the method
    ``ptloss_val_selected`` (their test accuracy was never used to choose)."""
    import numpy as np

    pool = [row for row, role in roles.items() if "val_selection" in role.split("+")]
    if not pool:
        return None, []
    means = {
        row: float(np.mean([r["val_accuracy"] for r in candidate_rows if r["row"] == row])) for row in pool
    }
    best = max(sorted(pool), key=lambda row: means[row])
    keep = RUN_COLUMNS[:3] + RUN_COLUMNS[4:]  # every column of runs.csv but the method
    chosen = [r for r in candidate_rows if r["row"] == best]
    students = [{**{k: r[k] for k in keep}, "method": "ptloss_val_selected"} for r in chosen]
    return best, students


def candidate_summary(
    search: Any,
    candidate_rows: list[dict[str, Any]],
    roles: dict[int, str],
    data_seed: int,
    teacher_seed: int,
) -> list[dict[str, Any]]:
    """Per trained search row: its search columns (score, eps_shift_tv, convex, converged, eligible) beside
    its students' mean test accuracy with the 95 % t interval over student seeds, and mean validation
    accuracy (rows of candidates.csv)."""
    from selfdistill.stats import mean_interval

    out = []
    t = search.table
    for row, role in roles.items():
        runs = [r for r in candidate_rows if r["row"] == row]
        if not runs:
            continue
        mean, low, high = mean_interval([r["test_accuracy"] for r in runs])
        out.append(
            {
                "data_seed": data_seed,
                "teacher_seed": teacher_seed,
                "row": row,
                "candidate": int(t["candidate"][row]),
                "temperature": float(t["temperature"][row]),
                "score": float(search.scores[row]),
                "eps_shift_tv": float(t["eps_shift_tv"][row]),
                "convex": int(t["convex"][row]),
                "converged": int(t["converged"][row]),
                "eligible": int(t["eligible"][row]),
                "role": role,
                "n_seeds": len(runs),
                "test_accuracy_mean": mean,
                "test_accuracy_ci_low": low,
                "test_accuracy_ci_high": high,
                "val_accuracy_mean": sum(r["val_accuracy"] for r in runs) / len(runs),
            }
        )
    return sorted(out, key=lambda r: r["score"])


def _plot_candidates(
    rows: list[dict[str, Any]], criterion: str, path: Path, spearman: dict[str, float]
) -> None:
    """Validation score of each trained row's proxy teacher against its students' mean test accuracy (95 %
    interval over student seeds), one colour per teacher; the selected row a star, eps = 0 a square."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    teachers = sorted({(r["data_seed"], r["teacher_seed"]) for r in rows})
    colours = plt.get_cmap("tab10")
    for k, (d, t) in enumerate(teachers):
        mine = [r for r in rows if (r["data_seed"], r["teacher_seed"]) == (d, t)]
        colour = colours(k % 10)
        for r in mine:
            roles = r["role"].split("+")
            marker = "*" if "selected" in roles else ("s" if r["candidate"] == 0 else "o")
            low, high = r["test_accuracy_ci_low"], r["test_accuracy_ci_high"]
            yerr = [[r["test_accuracy_mean"] - low], [high - r["test_accuracy_mean"]]] if low == low else None
            ax.errorbar([r["score"]], [r["test_accuracy_mean"]], yerr=yerr, fmt=marker, color=colour,
                        markersize=9 if marker == "*" else 5, capsize=2, elinewidth=1)  # fmt: skip
        rho = spearman.get(f"data{d}_teacher{t}")
        label = f"data {d}, teacher {t}"
        if rho is not None and rho == rho:
            label += f" (Spearman {rho:+.2f})"
        ax.plot([], [], "o", color=colour, label=label)
    ax.plot([], [], "*", color="gray", markersize=9, label="selected (eps, T)")
    ax.plot([], [], "s", color="gray", label="eps = 0 (KD at that T)")
    ax.set_xlabel(f"proxy-teacher {criterion} on the validation split (lower is better)")
    ax.set_ylabel("student test accuracy (PTLoss), mean and 95% CI over student seeds")
    ax.set_title("Does the proxy's validation score predict the student?", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    atomic_save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------------------------- summary


GENERIC_DESCRIPTIONS = {
    "ptloss_random": "PTLoss, first eligible random eps at the selected T",
    "ptloss_selected": "PTLoss, (eps, T) of the best proxy teacher on validation (risk-bound selection)",
    "ptloss_val_selected": "PTLoss, (eps, T) whose students have the best mean validation accuracy",
}


def _is_ptloss(name: str) -> bool:
    return name.startswith("ptloss")


def key_pairs(
    names: list[str], results: list[dict[str, Any]]
) -> tuple[list[tuple[str, str, str]], str | None]:
    """The comparisons the summary prints and plots, as ``(a, b, why)`` (a - b): every method against KL,
    every PTLoss method against the best baseline (the non-PTLoss method of highest mean VALIDATION
    accuracy), PTLoss at T against KD at the same T, the selected against the random eps, and the
    validation-accuracy selection against the risk-bound selection. Also returns the best baseline."""
    by_name = {r["method"]: r for r in results}
    baselines = [n for n in names if not _is_ptloss(n)]
    best = max(baselines, key=lambda n: by_name[n]["val_accuracy_mean"]) if baselines else None
    pairs: list[tuple[str, str, str]] = []

    def add(a: str, b: str, why: str) -> None:
        if a in names and b in names and a != b and not any((a, b) == p[:2] for p in pairs):
            pairs.append((a, b, why))

    for n in names:
        add(n, "kl", "against KL (T = 1)")
    for n in names:
        if _is_ptloss(n) and best is not None:
            add(n, best, f"against the best baseline by validation accuracy ({best})")
    for n in names:
        if n.startswith("ptloss_T"):
            t = n[len("ptloss_T"):]
            add(n, "kl" if float(t) == 1.0 and f"kd_T{t}" not in names else f"kd_T{t}",
                "PTLoss against KD at the same T")  # fmt: skip
    add("ptloss_selected", "ptloss_random", "selected against random eps")
    add("ptloss_val_selected", "ptloss_selected", "validation-accuracy selection against the risk-bound one")
    return pairs, best


def stage_summary(
    config: DistillConfig,
    names: list[str],
    descriptions: dict[str, str],
    teachers: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    candidates: list[dict[str, Any]],
    candidate_runs: list[dict[str, Any]],
    out: Path,
    plots: bool,
) -> dict[str, Any]:
    """The tables of the whole run (module docstring) and the summary (results.json)."""
    import math

    import numpy as np
    import scipy.stats

    from selfdistill.experiments.chain_summary import PAIRED_COLUMNS
    from selfdistill.io import atomic_write_csv, atomic_write_json
    from selfdistill.stats import mean_interval, paired_rows

    present = [n for n in names if any(r["method"] == n for r in runs)]
    table = []
    for name in present:
        rows = [r for r in runs if r["method"] == name]
        test = [r["test_accuracy"] for r in rows]
        mean, low, high = mean_interval(test)
        val = np.asarray([r["val_accuracy"] for r in rows], dtype=float)
        table.append(
            {
                "method": name,
                "description": descriptions.get(name, ""),
                "n_seeds": len(rows),
                "n_teachers": len({(r["data_seed"], r["teacher_seed"]) for r in rows}),
                "test_accuracy_mean": mean,
                "test_accuracy_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
                "test_accuracy_ci_low": low,
                "test_accuracy_ci_high": high,
                "val_accuracy_mean": float(val.mean()),
                "val_accuracy_std": float(val.std(ddof=1)) if val.size > 1 else 0.0,
            }
        )
    long = [{**r, "teacher": f"data{r['data_seed']}_teacher{r['teacher_seed']}"} for r in runs]

    def compare(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = paired_rows(long, pairs, arm="method", value="test_accuracy", unit=("teacher", "seed"),
                            cluster="teacher")  # fmt: skip
        return [{**{k: c.to_dict().get(k) for k in PAIRED_COLUMNS}, "comparison": f"{c.a} - {c.b}",
                 "metric": "test_accuracy"} for c in found]  # fmt: skip

    all_pairs = [(present[j], present[i]) for i in range(len(present)) for j in range(i + 1, len(present))]
    paired = compare(all_pairs) if all_pairs else []
    keys, best = key_pairs(present, table)
    by_pair = {(r["a"], r["b"]): r for r in paired}
    key_rows = [{**by_pair[(a, b)], "why": why} for a, b, why in keys]
    spearman = {}
    for entry in teachers:
        tag = f"data{entry['data_seed']}_teacher{entry['teacher_seed']}"
        key = (entry["data_seed"], entry["teacher_seed"])
        mine = [c for c in candidates if (c["data_seed"], c["teacher_seed"]) == key]
        if len(mine) >= 3:
            scores, accuracies = [c["score"] for c in mine], [c["test_accuracy_mean"] for c in mine]
            rho = scipy.stats.spearmanr(scores, accuracies)[0]
            spearman[tag] = float(rho) if rho == rho else math.nan
    atomic_write_csv(out / "runs.csv", runs, RUN_COLUMNS)
    atomic_write_csv(out / "results.csv", table, RESULT_COLUMNS)
    atomic_write_csv(out / "paired.csv", paired, PAIRED_COLUMNS)
    atomic_write_csv(out / "teachers.csv", [{k: e.get(k) for k in TEACHER_COLUMNS} for e in teachers],
                     TEACHER_COLUMNS)  # fmt: skip
    if candidates:
        atomic_write_csv(out / "candidates.csv", candidates, CANDIDATE_COLUMNS)
        atomic_write_csv(out / "candidate_runs.csv", candidate_runs, CANDIDATE_RUN_COLUMNS)
    summary: dict[str, Any] = {
        "name": config.name,
        "label_noise": config.data.label_noise,
        "seed_axes": {
            "data.seeds": config.data.seed_list,
            "teacher.seeds": config.teacher.seed_list,
            "seeds": config.seed_list,
            "description": axes_text(config),
        },
        "ptloss": {"temperatures": config.ptloss.temperatures, "form": config.ptloss.form},
        "teachers": teachers,
        "results": table,
        "best_baseline": best,
        "key_comparisons": key_rows,
        "paired": paired,
        "candidate_students": candidates,
        "candidate_spearman": spearman,
    }
    if plots:
        from selfdistill.nn.plots import plot_paired

        if key_rows:
            summary["plots"] = [str(plot_paired(key_rows, out / "paired.png", title=config.name))]
        if candidates:
            _plot_candidates(candidates, config.search.criterion, out / "candidates.png", spearman)
            summary.setdefault("plots", []).append(str(out / "candidates.png"))
    atomic_write_json(out / "results.json", summary)
    return summary


def axes_text(config: DistillConfig) -> str:
    """Which seed axes the run varies, in words."""
    d, t, s = len(config.data.seed_list), len(config.teacher.seed_list), len(config.seed_list)
    axes = (
        ("data (split, label noise)", d),
        ("teacher (initialization, batch order)", t),
        ("student (initialization, batch order)", s),
    )
    varied = [name for name, n in axes if n > 1]
    return (
        f"{d} data seed{'s' * (d != 1)} x {t} teacher seed{'s' * (t != 1)} = {d * t} "
        f"teacher{'s' * (d * t != 1)}, x {s} student seed{'s' * (s != 1)} = {d * t * s} paired units per "
        "method; varied: " + (", ".join(varied) if varied else "nothing (one unit: no interval)")
    )


# ------------------------------------------------------------------------------------------------- run


def _old_layout_note(out: Path) -> str | None:
    names = [n for n in ("teacher.pt", "runs.json", "candidates.json") if (Path(out) / n).is_file()]
    if not names:
        return None
    return (f"{out} holds {', '.join(names)} of the layout before teacher folders (one teacher at the top); "
            "they are not used: each teacher lives in teachers/data<D>_teacher<T>/")  # fmt: skip


def run_distillation(
    config: DistillConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    plots: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the stages of the module docstring into ``out`` for every teacher (data seed x teacher
    seed); returns the summary (results.json). Every setting, the data, the transfer set and a given teacher
    checkpoint are checked before ``out`` is touched; then the run owns ``out`` until it returns."""
    from selfdistill.io import atomic_write_json
    from selfdistill.nn.distributed import resolve_device

    started = time.perf_counter()
    out = Path(out)
    log = print if verbose else (lambda *a, **k: None)
    check_resumable(out, config, overwrite=overwrite)  # read-only: fail before loading the data
    device = resolve_device(config.device)
    data_seeds, teacher_seeds = config.data.seed_list, config.teacher.seed_list
    data = config.data.load(data_seeds[0])
    check_before_training(config, data)
    transfer = transfer_set(config, data, data_seeds[0])
    given = _load_given_teacher(config, data)
    folder = claim_run_folder(out, config, overwrite=overwrite)
    try:
        log(f"{config.name}: {axes_text(config)}; in {out} on {device}")
        note = _old_layout_note(out)
        if note:
            _stderr(note)
        names: list[str] = []
        descriptions: dict[str, str] = {}
        teachers, runs, candidates, candidate_runs = [], [], [], []
        for d in data_seeds:
            if d != data_seeds[0]:
                data = config.data.load(d)
                transfer = transfer_set(config, data, d)
            for t in teacher_seeds:
                here = teacher_folder(out, d, t)
                here.mkdir(parents=True, exist_ok=True)
                found = [n for n in ("teacher.pt", "runs.json", "candidates.json") if (here / n).is_file()]
                log(f"teacher data seed {d}, teacher seed {t}: "
                    f"{'resuming from ' + ', '.join(found) if found else 'starting'} in {here}")  # fmt: skip
                teacher = stage_teacher(
                    config, data, transfer, here, device, given, data_seed=d, teacher_seed=t
                )
                outputs = stage_teacher_outputs(teacher, data, transfer, device)
                log(f"  teacher {teacher.origin}; {_teacher_line(outputs.metrics, config.data.label_noise)}")
                search = stage_search(config, outputs, data, here, plots)
                log("  " + str(search).replace("\n", "\n  "))
                plan = method_plan(config, search)
                for method in plan:
                    if method.name not in names:
                        names.append(method.name)
                        descriptions[method.name] = GENERIC_DESCRIPTIONS.get(method.name, method.description)
                trainer = StudentTrainer(config, data, transfer, device)
                seeds = {"data_seed": d, "teacher_seed": t}
                runs += stage_students(
                    config, plan, outputs, trainer, teacher, here, log, search=search, **seeds
                )
                rows, roles = stage_candidates(config, search, outputs, trainer, teacher, here, log, **seeds)
                best_row, chosen = val_selected(rows, roles)
                if chosen and config.methods.ptloss_val_selected:
                    runs += chosen
                    if "ptloss_val_selected" not in names:
                        names.append("ptloss_val_selected")
                        descriptions["ptloss_val_selected"] = GENERIC_DESCRIPTIONS["ptloss_val_selected"]
                candidate_runs += rows
                candidates += candidate_summary(search, rows, roles, d, t)
                teachers.append(_teacher_entry(d, t, outputs, search, best_row))
        summary = stage_summary(
            config, names, descriptions, teachers, runs, candidates, candidate_runs, out, plots
        )
        summary["wall_seconds"] = time.perf_counter() - started  # this invocation (a resume: its part)
        # what the students cost when they were trained, resumed ones included (runs.csv's seconds)
        summary["students_seconds_total"] = float(sum(float(r.get("seconds", 0.0)) for r in runs))
        atomic_write_json(out / "results.json", summary)
        return summary
    finally:
        folder.release()


def _teacher_entry(
    d: int, t: int, outputs: TeacherOutputs, search: Any, val_row: int | None
) -> dict[str, Any]:
    """One row of teachers.csv: the teacher's diagnostics and what its search found."""
    table = search.table
    info = outputs.transfer_info
    return {
        "data_seed": d,
        "teacher_seed": t,
        **{k: v for k, v in outputs.metrics.items()},
        "transfer_accuracy": info.get("teacher_accuracy"),
        "transfer_accuracy_clean": info.get("teacher_accuracy_clean"),
        "selected_candidate": search.best_candidate,
        "selected_temperature": search.best_temperature,
        "selected_score": search.best_score,
        "baseline_score": search.baseline_score,
        "n_rows": search.n_rows,
        "n_eligible": int(search.eligible.sum()),
        "n_nonconvex": int((table["convex"] == 0).sum()),
        "n_not_converged": int((table["converged"] == 0).sum()),
        "val_selected_candidate": int(table["candidate"][val_row]) if val_row is not None else None,
        "val_selected_temperature": float(table["temperature"][val_row]) if val_row is not None else None,
        "transfer": info,
    }


# ------------------------------------------------------------------------------------------------ report


def _teacher_line(m: dict[str, Any], label_noise: float) -> str:
    """The teacher's diagnostics in one line, naming noisy and clean labels."""
    noisy = label_noise > 0
    train = (f"train acc {m['train_accuracy']:.4f} on the noisy labels it was trained on "
             f"({label_noise:.0%} flipped), {m['train_accuracy_clean']:.4f} on the clean ones"
             if noisy else f"train acc {m['train_accuracy']:.4f}")  # fmt: skip
    return (
        f"{train}; val acc {m['val_accuracy']:.4f}, test acc {m['test_accuracy']:.4f} (clean labels); "
        f"calibration (ECE with {m['ece_bins']} bins / NLL / Brier): val {m['val_ece']:.3f} / "
        f"{m['val_nll']:.3f} / {m['val_brier']:.3f}, test {m['test_ece']:.3f} / {m['test_nll']:.3f} / "
        f"{m['test_brier']:.3f}"
    )


def _transfer_line(transfer: dict[str, Any] | None) -> str:
    if not transfer:
        return "transfer set: the teacher's training inputs"
    line = (
        f"transfer set: {transfer['size']} unlabeled inputs ({transfer['source']}); teacher trained on "
        f"{transfer['teacher_train_size']}"
    )
    if "teacher_accuracy" in transfer:
        if transfer.get("label_noise", 0) > 0:
            line += (f"; teacher accuracy on the transfer set {transfer['teacher_accuracy']:.4f} against its "
                     f"NOISY labels ({transfer['label_noise']:.0%} flipped), "
                     f"{transfer.get('teacher_accuracy_clean', float('nan')):.4f} against the clean ones "
                     "(not used)")  # fmt: skip
        else:
            line += f"; teacher accuracy on the transfer set {transfer['teacher_accuracy']:.4f} (not used)"
    return line


def _points(row: dict[str, Any]) -> str:
    """``+m [lo, hi] pp (n=..); over k teachers [lo, hi]`` in percentage points."""
    if not (row["ci_low"] == row["ci_low"]):
        return f"{100 * row['mean']:+.2f} pp (n={row['n']}, no interval)"
    low, high = 100 * row["ci_low"], 100 * row["ci_high"]
    text = f"{100 * row['mean']:+.2f} [{low:+.2f}, {high:+.2f}] pp (n={row['n']})"
    if row.get("n_clusters"):
        text += (f"; over {row['n_clusters']} teachers [{100 * row['cluster_ci_low']:+.2f}, "
                 f"{100 * row['cluster_ci_high']:+.2f}]")  # fmt: skip
    return text


def format_results(summary: dict[str, Any]) -> str:
    """The printed summary: the seed axes, each teacher's diagnostics and search, the methods (mean, std and
    95 % interval of the test accuracy over units), the key paired comparisons, the wall time."""
    noise = summary.get("label_noise", 0.0)
    lines = [f"{summary['name']}: {summary['seed_axes']['description']}"]
    for entry in summary["teachers"]:
        lines.append(f"  teacher data seed {entry['data_seed']}, teacher seed {entry['teacher_seed']}: "
                     + _teacher_line(entry, noise))  # fmt: skip
        lines.append(f"    {_transfer_line(entry.get('transfer'))}")
        base = entry["baseline_score"]
        line = (
            f"    search: selected candidate {entry['selected_candidate']} at T = "
            f"{entry['selected_temperature']:g} (score {entry['selected_score']:.4f}"
        )
        if base is not None:
            line += f", eps = 0: {base:.4f}"
        line += (
            f"); {entry['n_eligible']} of {entry['n_rows']} rows eligible ({entry['n_nonconvex']} "
            f"non-convex, {entry['n_not_converged']} not converged)"
        )
        if entry.get("val_selected_candidate") is not None:
            line += (
                f"; by student validation accuracy: candidate {entry['val_selected_candidate']} at T = "
                f"{entry['val_selected_temperature']:g}"
            )
        lines.append(line)
    lines.append(
        f"  {'method':>20} {'units':>5}  {'test accuracy (clean labels)':>36}  {'val accuracy':>16}  "
        "description"
    )
    for row in summary["results"]:
        lines.append(
            f"  {row['method']:>20} {row['n_seeds']:>5}  {row['test_accuracy_mean']:.4f} ± "
            f"{row['test_accuracy_std']:.4f} [{row['test_accuracy_ci_low']:.4f}, "
            f"{row['test_accuracy_ci_high']:.4f}]"
            f"  {row['val_accuracy_mean']:.4f} ± {row['val_accuracy_std']:.4f}  {row['description']}"
        )
    if summary["key_comparisons"]:
        lines.append("  paired differences in test accuracy (a - b, same teacher and student seed; 95% t "
                     "interval; every pair in paired.csv):")  # fmt: skip
        for row in summary["key_comparisons"]:
            lines.append(f"    {row['a']} - {row['b']}: {_points(row)}  {row['verdict']}  [{row['why']}]")
    if summary.get("candidate_spearman"):
        rhos = ", ".join(f"{k} {v:+.2f}" for k, v in summary["candidate_spearman"].items())
        lines.append(
            f"  candidate students: Spearman correlation of proxy score and student test accuracy: {rhos} "
            "(negative: a lower score goes with a better student)"
        )
    if "wall_seconds" in summary:
        lines.append(
            f"  wall time {summary['wall_seconds']:.1f} s (this invocation; the students took "
            f"{summary.get('students_seconds_total', float('nan')):.1f} s in total when they were trained)"
        )
    return "\n".join(lines)
