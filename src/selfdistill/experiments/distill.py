"""Teacher -> student distillation with PTLoss and its baselines, from a YAML config.

Stages (each a function; every result lands in --out; an interrupted run resumes where it stopped):
  1. teacher (:func:`stage_teacher`): train it on the labeled training split, or load it
     (``teacher.checkpoint``); ``teacher.pt`` carries the sha256 of its weights and the fingerprint of the
     settings it depends on. The transfer set (section ``transfer``) is the teacher's own training inputs
     (``source: train``), a part of the training pool kept from the teacher whose labels are dropped
     (``held_out``), or unlabeled inputs from a file (``file``, checked against the statistics of the
     teacher's training inputs: a gross mismatch, e.g. raw pixels where the teacher saw standardized ones,
     gets a warning);
  2. teacher outputs (:func:`stage_teacher_outputs`): its probabilities on the transfer set and the
     validation split, its accuracies;
  3. search (:func:`stage_search`): the PTLoss perturbation search on the VALIDATION split: random
     candidate eps (candidate 0 = eps = 0), each scored by the Brier score of its proxy teacher; no student
     is trained per candidate (search.csv / search.json / search.png);
  4. students (:func:`stage_students`): the same student, seeds and budget trained on the transfer set (no
     labels are used) with each method of :mod:`selfdistill.nn.methods`: KL at T = 1, temperature KD for
     each T of the grid, the label-smoothed teacher, PTLoss with a random eps (the first random candidate)
     and PTLoss with the selected eps (runs.json / runs.csv, one row per method and seed); optionally
     PTLoss students for a few candidates spread over the score range (candidates.csv / candidates.png);
  5. summary (:func:`stage_summary`): results.csv / results.json, mean and std over seeds of the
     student's validation and test accuracy.

Saved teachers and per-run results are used again only when they verify (their sha256 matches, they were
written with the same settings and, for students, from the same teacher weights); otherwise they are
recomputed and one line on stderr says why. A ``teacher.checkpoint`` given in the config that fails its
hash is an error. The folder policy (lock, --overwrite, resume) is the one of ``selfdistill train``
(:mod:`selfdistill.experiments.runs`); the config schema is
:class:`selfdistill.experiments.config.DistillConfig`.

PTLoss is this project's definition (selfdistill.ptloss; Zhang et al. 2024, see docs/specs/ptloss.md).
Shipped configs: distill_digits (CPU, about a minute), distill_cifar100 (GPU; needs --data-root).
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

RUN_COLUMNS = ("method", "seed", "val_accuracy", "test_accuracy", "train_loss", "seconds")
RESULT_COLUMNS = (
    "method",
    "description",
    "n_seeds",
    "test_accuracy_mean",
    "test_accuracy_std",
    "val_accuracy_mean",
    "val_accuracy_std",
)
CANDIDATE_COLUMNS = ("candidate", "score", "seed", "val_accuracy", "test_accuracy", "train_loss", "seconds")
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
    """The teacher's training examples and the student's (unlabeled) transfer inputs. ``labels`` exist only
    for ``held_out`` (reported, never trained on)."""

    teacher_x: Any
    teacher_y: Any
    x: Any
    labels: Any
    source: str


def transfer_set(config: DistillConfig, data: Any) -> TransferSet:
    """The transfer set of the ``transfer`` section (module docstring)."""
    import torch

    transfer = config.transfer
    if transfer.source == "train":
        return TransferSet(data.x_train, data.y_train, data.x_train, None, "train")
    if transfer.source == "held_out":
        teacher_idx, transfer_idx = transfer_split(data.num_train, transfer.fraction, config.data.seed)
        teacher_idx, transfer_idx = torch.as_tensor(teacher_idx), torch.as_tensor(transfer_idx)
        return TransferSet(
            data.x_train[teacher_idx],
            data.y_train[teacher_idx],
            data.x_train[transfer_idx],
            data.y_train[transfer_idx],
            "held_out",
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
    return TransferSet(data.x_train, data.y_train, x, None, "file")


# ------------------------------------------------------------------------------------- settings (hashes)


def teacher_settings(config: DistillConfig) -> dict[str, Any]:
    """The settings the teacher's weights depend on (a subset of :func:`result_settings`, plus the examples
    it is trained on), stored as ``teacher.pt``'s fingerprint."""
    settings = {
        key: value
        for key, value in result_settings(config).items()
        if key.startswith(("data.", "teacher.", "device")) and key != "teacher.checkpoint"
    }
    held_out = config.transfer.source == "held_out"
    settings["teacher_examples"] = f"held_out {config.transfer.fraction!r}" if held_out else "train"
    return settings


def student_settings(config: DistillConfig) -> dict[str, Any]:
    """The settings every student result depends on besides its teacher's weights (stored with runs.json and
    candidates.json); the teacher itself is matched by the sha256 of its weights."""
    return {k: v for k, v in result_settings(config).items() if k != "teacher.checkpoint"}


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
        method = build_method(
            "ptloss", epsilon=candidates[1], temperature=config.ptloss.temperature, form=config.ptloss.form
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
    model = _teacher_model(config, data, read.payload["model"], path)
    return Teacher(
        model, read.weights_sha256 or state_dict_sha256(read.payload["model"]), f"loaded from {path}"
    )


def _teacher_model(config: DistillConfig, data: Any, weights: Any, path: Path) -> Any:
    from selfdistill.nn.chain import derive_seed, fresh_model

    model = fresh_model(config.teacher.model.factory(data), derive_seed(config.teacher.seed, 0, "init"))
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
    config: DistillConfig, data: Any, transfer: TransferSet, out: Path, device: Any, given: Teacher | None
) -> Teacher:
    """Stage 1: the given teacher, or ``out/teacher.pt`` when it verifies, or a newly trained teacher (saved
    to ``out/teacher.pt`` with its hashes). Returns it frozen (eval mode, no gradients)."""
    import torch

    from selfdistill.nn.chain import derive_seed, fresh_model, train_round
    from selfdistill.nn.checkpoint import read_verified_checkpoint, save_verified_checkpoint
    from selfdistill.nn.losses import SoftCrossEntropyLoss

    teacher = given
    path = out / "teacher.pt"
    settings = teacher_settings(config)
    if teacher is None:
        read = read_verified_checkpoint(path, settings=settings, weights_key="model")
        if read.ok:
            model = fresh_model(
                config.teacher.model.factory(data), derive_seed(config.teacher.seed, 0, "init")
            )
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
            seed=config.teacher.seed,
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
    """The teacher's probabilities on the transfer set and the validation split, and its accuracies."""

    transfer_probs: Any
    val_probs: Any
    metrics: dict[str, float]
    transfer_info: dict[str, Any]


def stage_teacher_outputs(teacher: Teacher, data: Any, transfer: TransferSet, device: Any) -> TeacherOutputs:
    """Stage 2: one evaluation pass of the teacher over each split it is needed on."""
    import torch

    from selfdistill.nn.training import accuracy, predict_logits

    logits = {
        split: predict_logits(teacher.model, getattr(data, f"x_{split}"), device=device)
        for split in ("val", "test")
    }
    logits["train"] = predict_logits(teacher.model, transfer.teacher_x, device=device)
    metrics = {
        f"{split}_accuracy": accuracy(logits[split], y)
        for split, y in (("train", transfer.teacher_y), ("val", data.y_val), ("test", data.y_test))
    }
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
    return TeacherOutputs(
        transfer_probs=torch.softmax(transfer_logits.double(), -1).float(),
        val_probs=torch.softmax(logits["val"].double(), -1),
        metrics=metrics,
        transfer_info=info,
    )


# ---------------------------------------------------------------------------------------------- 3. search


def stage_search(config: DistillConfig, outputs: TeacherOutputs, data: Any, out: Path, plots: bool) -> Any:
    """Stage 3: the PTLoss perturbation search on the labeled validation split (search.csv / .json / .png)."""
    from selfdistill.ptloss import select_perturbation

    s = config.search
    search = select_perturbation(
        outputs.val_probs,
        data.y_val,
        s.M,
        s.n_candidates,
        scale=s.scale,
        distribution=s.distribution,
        seed=s.seed,
        criterion=s.criterion,
        class_wise=s.class_wise,
    )
    search.to_csv(out / "search.csv")
    search.to_json(out / "search.json")
    if plots:
        search.plot(path=out / "search.png")
    return search


# -------------------------------------------------------------------------------------------- 4. students


def method_plan(config: DistillConfig, search: Any) -> list[Any]:
    """The :class:`selfdistill.nn.methods.DistillationMethod` of every method switched on, in table order."""
    from selfdistill.nn.methods import build_method

    m, pt = config.methods, config.ptloss
    plan = []
    if m.kl:
        plan.append(build_method("kl"))
    plan += [build_method("kd", temperature=t) for t in m.temperatures]
    plan += [build_method("label_smoothing", smoothing=a) for a in m.label_smoothing]
    best = search.best_index
    picks = (
        ("ptloss_random", 1, "random eps (candidate 1)"),
        ("ptloss_selected", best, f"selected eps (candidate {best})"),
    )
    for key, index, label in picks:
        if getattr(m, key):
            plan.append(
                build_method(
                    "ptloss",
                    epsilon=search.epsilons[index],
                    temperature=pt.temperature,
                    form=pt.form,
                    name=key,
                    label=label,
                )  # fmt: skip
            )
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
) -> list[dict[str, Any]]:
    """Stage 4: every method x seed (runs.json, kept after each student; runs.csv)."""
    from selfdistill.io import atomic_write_csv

    runs = VerifiedRows(out / "runs.json", student_settings(config), teacher.sha256)
    done = {(r["method"], r["seed"]) for r in runs.rows}
    for method in plan:
        targets = method.targets(outputs.transfer_probs)
        for seed in config.seed_list:
            if (method.name, seed) in done:
                continue
            runs.add({"method": method.name, "seed": seed, **trainer(method.loss, targets, seed)})
            log(f"  {method.name:>16} seed {seed}: test accuracy {runs.rows[-1]['test_accuracy']:.4f}")
    atomic_write_csv(out / "runs.csv", runs.rows, RUN_COLUMNS)
    return runs.rows


def stage_candidates(
    config: DistillConfig,
    search: Any,
    outputs: TeacherOutputs,
    trainer: StudentTrainer,
    teacher: Teacher,
    out: Path,
    plots: bool,
) -> list[dict[str, Any]]:
    """Stage 4b: PTLoss students for candidates spread over the score range (first seed only)."""
    import numpy as np

    from selfdistill.io import atomic_write_csv
    from selfdistill.nn.methods import build_method

    count = config.candidate_students
    if count == 0:
        return []
    order = np.argsort(search.scores, kind="stable")
    spread = {int(order[int(round(q))]) for q in np.linspace(0, len(order) - 1, count)}
    picks = sorted(spread | ({0} if search.baseline_score is not None else set()))  # eps = 0 as a reference
    saved = VerifiedRows(out / "candidates.json", student_settings(config), teacher.sha256)
    seed = config.seed_list[0]
    done = {r["candidate"] for r in saved.rows if r["seed"] == seed}
    for index in picks:
        if index in done:
            continue
        method = build_method("ptloss", epsilon=search.epsilons[index], temperature=config.ptloss.temperature,
                              form=config.ptloss.form, name=f"candidate_{index}")  # fmt: skip
        metrics = trainer(method.loss, method.targets(outputs.transfer_probs), seed)
        saved.add({"candidate": index, "score": float(search.scores[index]), "seed": seed, **metrics})
    rows = [r for r in saved.rows if r["seed"] == seed and r["candidate"] in picks]
    rows.sort(key=lambda r: r["score"])
    atomic_write_csv(out / "candidates.csv", rows, CANDIDATE_COLUMNS)
    if plots:
        _plot_candidates(rows, search, out / "candidates.png")
    return rows


def _plot_candidates(rows: list[dict[str, Any]], search: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.scatter([r["score"] for r in rows], [r["test_accuracy"] for r in rows], color="tab:blue")
    for r in rows:
        marker = (
            " (eps=0)"
            if r["candidate"] == 0
            else (" (selected)" if r["candidate"] == search.best_index else "")
        )
        ax.annotate(f"{r['candidate']}{marker}", (r["score"], r["test_accuracy"]), fontsize=7)
    ax.set_xlabel(f"proxy-teacher {search.criterion} on the validation split (lower is better)")
    ax.set_ylabel("student test accuracy (PTLoss)")
    ax.set_title("Validation score vs student accuracy across eps candidates")
    atomic_save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------------------------- 5. summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def stage_summary(
    config: DistillConfig,
    plan: list[Any],
    runs: list[dict[str, Any]],
    outputs: TeacherOutputs,
    search: Any,
    candidates: list[dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    """Stage 5: mean and std over seeds per method (results.csv) and the whole summary (results.json)."""
    from selfdistill.io import atomic_write_csv, atomic_write_json

    table = []
    for method in plan:
        rows = [r for r in runs if r["method"] == method.name and r["seed"] in config.seed_list]
        test_mean, test_std = _mean_std([r["test_accuracy"] for r in rows])
        val_mean, val_std = _mean_std([r["val_accuracy"] for r in rows])
        table.append(
            {
                "method": method.name,
                "description": method.description,
                "n_seeds": len(rows),
                "test_accuracy_mean": test_mean,
                "test_accuracy_std": test_std,
                "val_accuracy_mean": val_mean,
                "val_accuracy_std": val_std,
            }
        )
    atomic_write_csv(out / "results.csv", table, RESULT_COLUMNS)
    summary = {
        "name": config.name,
        "teacher": outputs.metrics,
        "transfer": outputs.transfer_info,
        "search": {
            "criterion": search.criterion,
            "best_index": search.best_index,
            "best_score": search.best_score,
            "baseline_score": search.baseline_score,
            "best_epsilon": search.best_epsilon.tolist(),
        },
        "results": table,
        "candidate_students": candidates,
        "seeds": config.seed_list,
    }
    atomic_write_json(out / "results.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------- run


def run_distillation(
    config: DistillConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    plots: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the stages of the module docstring into ``out``; returns the summary (results.json).
    Every setting, the data, the transfer set and a given teacher checkpoint are checked before ``out`` is
    touched; then the run owns ``out`` until it returns."""
    from selfdistill.nn.distributed import resolve_device

    out = Path(out)
    log = print if verbose else (lambda *a, **k: None)
    check_resumable(out, config, overwrite=overwrite)  # read-only: fail before loading the data
    device = resolve_device(config.device)
    data = config.data.load()
    check_before_training(config, data)
    transfer = transfer_set(config, data)
    given = _load_given_teacher(config, data)
    folder = claim_run_folder(out, config, overwrite=overwrite)
    try:
        found = [name for name in ("teacher.pt", "runs.json") if (out / name).is_file()]
        log(f"{config.name}: {'resuming from ' + ' and '.join(found) if found else 'starting'} in {out} "
            f"on {device}")  # fmt: skip
        teacher = stage_teacher(config, data, transfer, out, device, given)
        log(f"teacher {teacher.origin}")
        outputs = stage_teacher_outputs(teacher, data, transfer, device)
        log(
            f"teacher accuracy: val {outputs.metrics['val_accuracy']:.4f}, "
            f"test {outputs.metrics['test_accuracy']:.4f}; transfer set: {outputs.transfer_info['size']} "
            f"unlabeled inputs ({outputs.transfer_info['source']})"
        )
        search = stage_search(config, outputs, data, out, plots)
        log(str(search))
        plan = method_plan(config, search)
        trainer = StudentTrainer(config, data, transfer, device)
        runs = stage_students(config, plan, outputs, trainer, teacher, out, log)
        candidates = stage_candidates(config, search, outputs, trainer, teacher, out, plots)
        return stage_summary(config, plan, runs, outputs, search, candidates, out)
    finally:
        folder.release()


# ------------------------------------------------------------------------------------------------ report


def _transfer_line(transfer: dict[str, Any] | None) -> str:
    if not transfer:
        return "  transfer set: the teacher's training inputs"
    line = (
        f"  transfer set: {transfer['size']} unlabeled inputs ({transfer['source']}); teacher trained on "
        f"{transfer['teacher_train_size']}"
    )
    if "teacher_accuracy" in transfer:
        line += f"; teacher accuracy on the transfer set {transfer['teacher_accuracy']:.4f} (not used)"
    return line


def format_results(summary: dict[str, Any]) -> str:
    """The results table as text (mean +- std over seeds)."""
    teacher = summary["teacher"]
    lines = [
        f"{summary['name']}: teacher test accuracy {teacher['test_accuracy']:.4f} "
        f"(val {teacher['val_accuracy']:.4f}); selected eps = candidate {summary['search']['best_index']}",
        _transfer_line(summary.get("transfer")),
        f"  {'method':>16} {'seeds':>5} {'test accuracy':>18} {'val accuracy':>18}  description",
    ]
    for row in summary["results"]:
        lines.append(
            f"  {row['method']:>16} {row['n_seeds']:>5} {row['test_accuracy_mean']:.4f} +- "
            f"{row['test_accuracy_std']:.4f}   {row['val_accuracy_mean']:.4f} +- "
            f"{row['val_accuracy_std']:.4f}"
            f"  {row['description']}"
        )
    return "\n".join(lines)
