"""Teacher -> student distillation with PTLoss and its baselines, from a YAML config.

Steps (every result lands in --out; a run that is interrupted resumes where it stopped):
  1. train the teacher on the labeled training split (or load it: teacher.checkpoint), save teacher.pt;
     the transfer set (section ``transfer``) is the teacher's own training inputs (``source: train``), a
     part of the training pool kept from the teacher whose labels are dropped (``held_out``), or unlabeled
     inputs from a file (``file``);
  2. PTLoss perturbation search on the VALIDATION split: random candidate eps (candidate 0 = eps = 0), each
     scored by the Brier score of its proxy teacher; no student is trained per candidate
     (search.csv / search.json / search.png);
  3. the same student, seeds and budget trained on the transfer set (no labels are used) with:
     KL at T = 1, temperature KD for each T of the grid (T^2 * KL of softened distributions), the
     label-smoothed teacher ((1 - a) p_t + a / C, KL), PTLoss with a random eps (the first random
     candidate) and PTLoss with the selected eps (runs.csv, one row per method and seed);
  4. results.csv / results.json: mean and std over seeds of the student's validation and test accuracy;
  5. optionally, students trained with PTLoss for a few candidates spread over the score range, and a plot
     of the validation score against the student's test accuracy (candidates.csv / candidates.png).

PTLoss is this project's definition (selfdistill.ptloss; Zhang et al. 2024, see docs/specs/ptloss.md).
Shipped configs: distill_digits (CPU, about a minute), distill_cifar100 (GPU; needs --data-root).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path
from typing import Any

from selfdistill.experiments.config import (
    add_run_arguments,
    apply_overrides,
    check_out_is_folder,
    config_differences,
    optimizer_config,
    prepare_out_dir,
    read_yaml,
    resolve_config_path,
)
from selfdistill.io import atomic_save_figure, to_jsonable

DEFAULTS: dict[str, Any] = {
    "name": "distill",
    "data": {
        "name": "digits",
        "root": None,
        "val_fraction": 0.2,
        "label_noise": 0.0,
        "seed": 0,
        "subset": None,
        "verify_checksums": True,
    },
    "teacher": {
        "model": {"name": "mlp"},
        "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "steps": 1000},
        "seed": 0,
        "checkpoint": None,
    },
    "student": {
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "steps": 1000},
    },
    "seeds": 3,
    "methods": {
        "kl": True,
        "temperatures": [2.0, 4.0, 8.0],
        "label_smoothing": [0.1],
        "ptloss_random": True,
        "ptloss_selected": True,
    },
    "ptloss": {"temperature": 1.0, "form": "full"},
    "search": {
        "M": 5,
        "n_candidates": 200,
        "scale": 0.25,
        "distribution": "uniform",
        "seed": 0,
        "criterion": "brier",
        "class_wise": True,
    },
    "transfer": {"source": "train", "fraction": 0.5, "path": None},
    "candidate_students": 0,
    "device": "cpu",
}
TRANSFER_SOURCES = ("train", "held_out", "file")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, example="distill_digits", set_example="student.optimizer.steps=50")


def main(args: argparse.Namespace) -> int:

    path = resolve_config_path(args.config)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    config = parse_config(apply_overrides(raw, args.overrides), source=str(path))
    if args.data_root is not None:
        config["data"]["root"] = str(args.data_root)
    out = args.out if args.out is not None else Path("results") / config["name"]
    summary = run_distillation(config, out, overwrite=args.overwrite, plots=not args.no_plots)
    print(format_results(summary))
    print(f"results written to {out}")
    return 0


# ----------------------------------------------------------------------------------------------- config


def _merge(defaults: dict[str, Any], raw: dict[str, Any], where: str, free: frozenset[str]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in raw.items():
        if key not in defaults and where not in free:
            known = ", ".join(sorted(defaults))
            raise ValueError(f"{where + '.' if where else ''}{key}: unknown key; known keys: {known}")
        if key == "optimizer" and isinstance(value, dict):  # free keys, checked by optimizer_config
            out[key] = {**defaults[key], **copy.deepcopy(value)}
            if "epochs" in value and "steps" not in value:
                out[key].pop("steps", None)  # an epoch budget replaces the default step budget
        elif isinstance(defaults.get(key), dict) and key != "model":
            if not isinstance(value, dict):
                raise ValueError(f"{where + '.' if where else ''}{key}: expected a mapping, got {value!r}")
            out[key] = _merge(defaults[key], value, f"{where}.{key}" if where else key, free)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_config(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Defaults merged with ``raw``, validated (unknown keys, ranges); raises ValueError naming the key."""
    if isinstance(raw, dict) and "chain" in raw:  # (also when --set added a teacher section to it)
        raise ValueError(
            f"{source}: this is a self-distillation chain config (it has a 'chain' section); run it with "
            "`selfdistill train`, not `selfdistill distill`"
        )
    try:
        config = _merge(DEFAULTS, raw, "", frozenset())
        for part in ("teacher", "student"):
            model = config[part]["model"]
            if not isinstance(model, dict) or "name" not in model:
                raise ValueError(f"{part}.model: expected a mapping with a 'name' (e.g. {{name: mlp}})")
            optimizer_config(config[part]["optimizer"], f"{part}.optimizer")  # same schema as train
        seeds = config["seeds"]
        if isinstance(seeds, int):
            if seeds < 1:
                raise ValueError(f"seeds: expected a positive count or a list of seeds, got {seeds}")
            config["seeds"] = list(range(seeds))
        elif not (
            isinstance(seeds, list)
            and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)
        ):
            raise ValueError(
                f"seeds: expected a positive count or a list of distinct integer seeds >= 0, got {seeds!r}"
            )
        methods = config["methods"]
        for key in ("temperatures", "label_smoothing"):
            values = methods[key] or []
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"methods.{key}: expected a list of numbers, got {values!r}")
            methods[key] = [float(v) for v in values]
        if any(not (t > 0 and math.isfinite(t)) for t in methods["temperatures"]):
            raise ValueError(f"methods.temperatures: every T must be positive, got {methods['temperatures']}")
        if any(not 0 <= a < 1 for a in methods["label_smoothing"]):
            raise ValueError(
                f"methods.label_smoothing: every a must be in [0, 1), got {methods['label_smoothing']}"
            )
        search = config["search"]
        if not isinstance(search["class_wise"], bool):
            raise ValueError(f"search.class_wise: expected true or false, got {search['class_wise']!r}")
        if isinstance(search["seed"], bool) or not isinstance(search["seed"], int):
            raise ValueError(f"search.seed: expected an integer, got {search['seed']!r}")
        if not (isinstance(search["n_candidates"], int) and search["n_candidates"] >= 2):
            raise ValueError("search.n_candidates: need at least 2 (eps = 0 and one random candidate)")
        if not (isinstance(config["candidate_students"], int) and config["candidate_students"] >= 0):
            raise ValueError(
                f"candidate_students: expected a count >= 0, got {config['candidate_students']!r}"
            )
        if config["candidate_students"] > search["n_candidates"]:
            raise ValueError("candidate_students: cannot exceed search.n_candidates")
        if not isinstance(config["data"]["verify_checksums"], bool):
            raise ValueError(
                f"data.verify_checksums: expected true or false, got {config['data']['verify_checksums']!r}"
            )
        _check_transfer(config["transfer"])
        if config["device"] not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: expected auto, cpu or cuda, got {config['device']!r}")
        if not any(
            [methods["kl"], methods["temperatures"], methods["label_smoothing"]]
            + [methods["ptloss_random"], methods["ptloss_selected"]]
        ):
            raise ValueError("methods: every method is switched off; nothing to train")
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return config


def _check_transfer(transfer: dict[str, Any]) -> None:
    source, fraction, path = transfer["source"], transfer["fraction"], transfer["path"]
    if source not in TRANSFER_SOURCES:
        raise ValueError(f"transfer.source: expected one of {', '.join(TRANSFER_SOURCES)}, got {source!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"transfer.fraction: expected a number in (0, 1), got {fraction!r}")
    if source == "file" and not path:
        raise ValueError("transfer.path: source 'file' needs the path of a .npy, .npz or .pt file of inputs")
    if source != "file" and path:
        raise ValueError(f"transfer.path is only read with transfer.source: file (source is {source!r})")


# --------------------------------------------------------------------------------------------- building


def transfer_split(n: int, fraction: float, seed: int) -> tuple[Any, Any]:
    """(teacher indices, transfer indices) of a training pool of ``n``: a seeded random
    ``round(fraction * n)`` examples form the transfer set, the rest train the teacher; both sorted,
    disjoint, covering 0..n-1."""
    import numpy as np

    m = int(round(fraction * n))
    if not 1 <= m <= n - 1:
        raise ValueError(
            f"transfer.fraction={fraction:g} of {n} training examples leaves {m} for the transfer set and "
            f"{n - m} for the teacher; both need at least one (choose a fraction nearer 0.5)"
        )
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A5F])).permutation(n)
    return np.sort(order[m:]), np.sort(order[:m])


def load_transfer_inputs(path: str | Path, input_shape: tuple[int, ...]) -> Any:
    """Unlabeled transfer inputs from ``path`` as a float32 tensor ``(N, *input_shape)``: a .npy array, an
    .npz with an array ``x`` (or its only array), or a .pt tensor; preprocessed like the data set's inputs
    (e.g. saved from ``load_data(...).x_train``)."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"transfer.path: {path} does not exist; give a .npy, .npz or .pt file of inputs"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "x" not in names and len(names) != 1:
                    raise ValueError(f"holds arrays {names}; name the inputs 'x'")
                array = archive["x" if "x" in names else names[0]]
        elif suffix == ".pt":
            array = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(array, torch.Tensor):
                raise ValueError(f"holds a {type(array).__name__}, not a tensor")
            array = array.numpy()
        else:
            raise ValueError(f"unsupported file type {suffix!r}; use .npy, .npz or .pt")
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"transfer.path: cannot read inputs from {path}: {err}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"transfer.path: {path} holds {array.dtype} values, expected numbers")
    x = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] == 0:
        raise ValueError(
            f"transfer.path: {path} holds inputs of shape {tuple(x.shape)}; expected (N, "
            f"{', '.join(str(d) for d in input_shape)}) with N >= 1, preprocessed like the data set's inputs"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"transfer.path: {path} contains NaN or infinite inputs; remove or impute them")
    return x


def transfer_set(transfer: dict[str, Any], data: Any, split_seed: int) -> tuple[Any, Any, Any, Any]:
    """(teacher inputs, teacher labels, transfer inputs, transfer labels) for the ``transfer`` section (see
    the module docstring). The transfer labels exist only for ``held_out`` (for a report; never trained
    on); otherwise None."""
    import torch

    if transfer["source"] == "train":
        return data.x_train, data.y_train, data.x_train, None
    if transfer["source"] == "held_out":
        teacher_idx, transfer_idx = transfer_split(data.num_train, transfer["fraction"], split_seed)
        teacher_idx, transfer_idx = torch.as_tensor(teacher_idx), torch.as_tensor(transfer_idx)
        return (
            data.x_train[teacher_idx],
            data.y_train[teacher_idx],
            data.x_train[transfer_idx],
            data.y_train[transfer_idx],
        )
    return data.x_train, data.y_train, load_transfer_inputs(transfer["path"], data.input_shape), None



def _train_spec(options: dict[str, Any], where: str):
    return optimizer_config(options, where).to_train_spec()


def _model_factory(model_options: dict[str, Any], data: Any):
    from selfdistill.nn.models import build_model

    kwargs = {k: v for k, v in model_options.items() if k != "name"}

    def factory():
        return build_model(model_options["name"], data.num_classes, data.input_shape, **kwargs)

    return factory


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available (use device: cpu or auto)")
    return torch.device(name)


def _method_table(config: dict[str, Any], search: Any, num_classes: int) -> list[dict[str, Any]]:
    """(name, description, loss module, smoothing) for every method switched on."""
    from selfdistill.nn.losses import ProbabilityTargetPTLoss, TemperatureKLLoss
    from selfdistill.ptloss import PTLoss

    methods = config["methods"]
    pt_options = config["ptloss"]
    table = []
    if methods["kl"]:
        table.append({"method": "kl", "description": "KL(p_t || p_s), T = 1", "loss": TemperatureKLLoss(1.0)})
    for t in methods["temperatures"]:
        table.append(
            {
                "method": f"kd_T{t:g}",
                "description": f"T^2 KL, softened, T = {t:g}",
                "loss": TemperatureKLLoss(t),
            }
        )
    for a in methods["label_smoothing"]:
        table.append(
            {
                "method": f"ls_{a:g}",
                "description": f"KL to (1 - {a:g}) p_t + {a:g} / C",
                "loss": TemperatureKLLoss(1.0),
                "smoothing": a,
            }
        )
    for key, index in (("ptloss_random", 1), ("ptloss_selected", search.best_index)):
        if methods[key]:
            eps = search.epsilons[index]
            loss = PTLoss(
                eps[0] if eps.shape[0] == 1 else eps, pt_options["temperature"], form=pt_options["form"]
            )
            what = (
                "random eps (candidate 1)" if key == "ptloss_random" else f"selected eps (candidate {index})"
            )
            table.append(
                {"method": key, "description": f"PTLoss, {what}", "loss": ProbabilityTargetPTLoss(loss)}
            )
    return table


# ------------------------------------------------------------------------------------------------- run


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def check_before_training(config: dict[str, Any], data: Any) -> None:
    """Build every model and loss the run will use once and draw the search candidates, so that a bad
    setting (model arguments, search or ptloss options) fails with its section named before any training."""
    import torch

    from selfdistill.nn.losses import ProbabilityTargetPTLoss, check_loss_fits
    from selfdistill.ptloss import PTLoss, sample_candidates
    from selfdistill.ptloss.search import CRITERIA

    for part in ("teacher", "student"):
        try:
            with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
                _model_factory(config[part]["model"], data)()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{part}.model {config[part]['model']}: {err}") from None
    s = config["search"]
    try:
        if s["criterion"] not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {s['criterion']!r}")
        candidates = sample_candidates(
            data.num_classes,
            s["M"],
            2,
            scale=s["scale"],
            distribution=s["distribution"],
            seed=s["seed"],
            class_wise=s["class_wise"],
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"search: {err}") from None
    options = config["ptloss"]
    try:
        loss = PTLoss(candidates[1], options["temperature"], form=options["form"])
        check_loss_fits(ProbabilityTargetPTLoss(loss), data.num_classes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ptloss: {err}") from None


def run_distillation(
    config: dict[str, Any],
    out: str | Path,
    *,
    overwrite: bool = False,
    plots: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the whole workflow of the module docstring; returns the summary (results.json)."""
    import torch

    from selfdistill.nn.chain import derive_seed, fresh_model
    from selfdistill.nn.checkpoint import (
        atomic_write_csv,
        atomic_write_json,
        load_checkpoint,
        save_checkpoint,
    )
    from selfdistill.nn.data import load_data
    from selfdistill.nn.losses import SoftCrossEntropyLoss
    from selfdistill.nn.training import accuracy, predict_logits, train
    from selfdistill.ptloss import select_perturbation

    out = Path(out)
    log = print if verbose else (lambda *a, **k: None)
    snapshot_path = out / "config.json"
    check_out_is_folder(out)
    previous = load_json(snapshot_path) if not overwrite else None
    if previous is not None:
        differences = config_differences(previous, to_jsonable(config), ignore=("name", "data.root"))
        if differences:
            raise ValueError(
                f"--out {out} holds a run with a different config, so it cannot be resumed:\n  "
                + "\n  ".join(differences)
                + "\nuse another --out, or --overwrite (alias --force) to discard the old run"
            )
    device = _device(config["device"])
    d = config["data"]
    try:
        data = load_data(
            d["name"],
            root=d["root"],
            val_fraction=d["val_fraction"],
            label_noise=d["label_noise"],
            seed=d["seed"],
            subset=d["subset"],
            verify_checksums=d["verify_checksums"],
        )
    except ValueError as err:
        raise ValueError(f"data: {err}") from None
    if data.num_val == 0:
        raise ValueError("data.val_fraction: the perturbation search needs a labeled validation split (> 0)")
    check_before_training(config, data)  # every setting is validated before the teacher trains
    teacher_x, teacher_y, transfer_x, transfer_y = transfer_set(config["transfer"], data, d["seed"])

    # 1. teacher (a given checkpoint is checked before anything is written to --out)
    teacher_factory = _model_factory(config["teacher"]["model"], data)
    given = bool(config["teacher"]["checkpoint"])
    teacher_path = Path(config["teacher"]["checkpoint"]) if given else out / "teacher.pt"
    payload = load_checkpoint(teacher_path) if given or not overwrite else None
    teacher = fresh_model(teacher_factory, derive_seed(config["teacher"]["seed"], 0, "init"))
    if payload is not None:
        try:
            teacher.load_state_dict(payload["model"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(
                f"teacher.checkpoint: {teacher_path} does not hold weights for teacher.model "
                f"{config['teacher']['model']} ({str(err).splitlines()[0]}); point it at a teacher.pt "
                "written by `selfdistill distill` with the same teacher.model"
            ) from None
    elif given:
        raise FileNotFoundError(
            f"teacher.checkpoint: cannot read {teacher_path} (missing, or not a teacher.pt written by "
            "`selfdistill distill`)"
        )
    prepare_out_dir(out)
    if overwrite:
        for name in ("runs.json", "teacher.pt", "candidates.json"):
            (out / name).unlink(missing_ok=True)
    atomic_write_json(snapshot_path, to_jsonable(config))
    if payload is not None:
        log(f"teacher loaded from {teacher_path}")
    else:
        start = time.perf_counter()
        onehot = torch.nn.functional.one_hot(teacher_y, data.num_classes).float()
        generator = torch.Generator().manual_seed(derive_seed(config["teacher"]["seed"], 0, "data"))
        train(
            teacher,
            teacher_x,
            onehot,
            SoftCrossEntropyLoss(),
            _train_spec(config["teacher"]["optimizer"], "teacher.optimizer"),
            generator=generator,
            device=device,
            augment=data.augment,
        )
        save_checkpoint(teacher_path, {"model": teacher.state_dict()})
        log(f"teacher trained in {time.perf_counter() - start:.1f} s")
    teacher.requires_grad_(False)
    teacher.eval()
    logits = {
        split: predict_logits(teacher, getattr(data, f"x_{split}"), device=device)
        for split in ("val", "test")
    }
    logits["train"] = predict_logits(teacher, teacher_x, device=device)
    teacher_metrics = {
        f"{split}_accuracy": accuracy(logits[split], y)
        for split, y in (("train", teacher_y), ("val", data.y_val), ("test", data.y_test))
    }
    transfer_logits = (
        logits["train"] if transfer_x is teacher_x else predict_logits(teacher, transfer_x, device=device)
    )
    transfer_info = {
        "source": config["transfer"]["source"],
        "size": int(transfer_x.shape[0]),
        "teacher_train_size": int(teacher_x.shape[0]),
    }
    if transfer_y is not None:  # held out: its labels exist but no model is trained on them; report only
        transfer_info["teacher_accuracy"] = accuracy(transfer_logits, transfer_y)
    log(
        f"teacher accuracy: val {teacher_metrics['val_accuracy']:.4f}, "
        f"test {teacher_metrics['test_accuracy']:.4f}; transfer set: {transfer_info['size']} "
        f"unlabeled inputs ({transfer_info['source']})"
    )
    transfer_probs = torch.softmax(transfer_logits.double(), -1).float()

    # 2. perturbation search on the labeled validation split
    s = config["search"]
    search = select_perturbation(
        torch.softmax(logits["val"].double(), -1),
        data.y_val,
        s["M"],
        s["n_candidates"],
        scale=s["scale"],
        distribution=s["distribution"],
        seed=s["seed"],
        criterion=s["criterion"],
        class_wise=s["class_wise"],
    )
    search.to_csv(out / "search.csv")
    search.to_json(out / "search.json")
    if plots:
        search.plot(path=out / "search.png")
    log(str(search))

    # 3. students
    student_factory = _model_factory(config["student"]["model"], data)
    student_spec = _train_spec(config["student"]["optimizer"], "student.optimizer")
    methods = _method_table(config, search, data.num_classes)

    def train_student(loss_fn: Any, targets: Any, seed: int) -> dict[str, float]:
        student = fresh_model(student_factory, derive_seed(seed, 1, "init"))
        generator = torch.Generator().manual_seed(derive_seed(seed, 1, "data"))
        result = train(
            student,
            transfer_x,
            targets,
            loss_fn,
            student_spec,
            generator=generator,
            device=device,
            augment=data.augment,
        )
        return {
            "val_accuracy": accuracy(predict_logits(student, data.x_val, device=device), data.y_val),
            "test_accuracy": accuracy(predict_logits(student, data.x_test, device=device), data.y_test),
            "train_loss": result.last_batch_loss,
            "seconds": result.seconds,
        }

    runs_path = out / "runs.json"
    runs: list[dict[str, Any]] = (load_json(runs_path) or []) if not overwrite else []
    done = {(r["method"], r["seed"]) for r in runs}
    for spec in methods:
        targets = transfer_probs
        if "smoothing" in spec:
            targets = (1 - spec["smoothing"]) * transfer_probs + spec["smoothing"] / data.num_classes
        for seed in config["seeds"]:
            if (spec["method"], seed) in done:
                continue
            row = {"method": spec["method"], "seed": seed, **train_student(spec["loss"], targets, seed)}
            runs.append(row)
            atomic_write_json(runs_path, runs)  # finished work is never lost
            log(f"  {spec['method']:>16} seed {seed}: test accuracy {row['test_accuracy']:.4f}")
    atomic_write_csv(out / "runs.csv", runs, RUN_COLUMNS)

    # 4. results table
    table = []
    for spec in methods:
        rows = [r for r in runs if r["method"] == spec["method"] and r["seed"] in config["seeds"]]
        test_mean, test_std = _mean_std([r["test_accuracy"] for r in rows])
        val_mean, val_std = _mean_std([r["val_accuracy"] for r in rows])
        table.append(
            {
                "method": spec["method"],
                "description": spec["description"],
                "n_seeds": len(rows),
                "test_accuracy_mean": test_mean,
                "test_accuracy_std": test_std,
                "val_accuracy_mean": val_mean,
                "val_accuracy_std": val_std,
            }
        )
    atomic_write_csv(out / "results.csv", table, RESULT_COLUMNS)

    # 5. validation score vs student accuracy across candidates
    candidates = _candidate_students(config, search, train_student, transfer_probs, out, plots)
    summary = {
        "name": config["name"],
        "teacher": teacher_metrics,
        "transfer": transfer_info,
        "search": {
            "criterion": search.criterion,
            "best_index": search.best_index,
            "best_score": search.best_score,
            "baseline_score": search.baseline_score,
            "best_epsilon": search.best_epsilon.tolist(),
        },
        "results": table,
        "candidate_students": candidates,
        "seeds": config["seeds"],
    }
    atomic_write_json(out / "results.json", summary)
    return summary


def _candidate_students(
    config: dict[str, Any], search: Any, train_student: Any, transfer_probs: Any, out: Path, plots: bool
) -> list[dict[str, Any]]:
    """Students trained with PTLoss for candidates spread over the score range (first seed only)."""
    import numpy as np

    from selfdistill.nn.checkpoint import atomic_write_csv, atomic_write_json
    from selfdistill.nn.losses import ProbabilityTargetPTLoss
    from selfdistill.ptloss import PTLoss

    count = config["candidate_students"]
    if count == 0:
        return []
    order = np.argsort(search.scores, kind="stable")
    spread = {int(order[int(round(q))]) for q in np.linspace(0, len(order) - 1, count)}
    picks = sorted(spread | ({0} if search.baseline_score is not None else set()))  # eps = 0 as a reference
    path = out / "candidates.json"
    rows: list[dict[str, Any]] = load_json(path) or []
    done = {r["candidate"] for r in rows}
    seed = config["seeds"][0]
    for index in picks:
        if index in done:
            continue
        eps = search.epsilons[index]
        loss = PTLoss(
            eps[0] if eps.shape[0] == 1 else eps,
            config["ptloss"]["temperature"],
            form=config["ptloss"]["form"],
        )
        metrics = train_student(ProbabilityTargetPTLoss(loss), transfer_probs, seed)
        rows.append({"candidate": index, "score": float(search.scores[index]), "seed": seed, **metrics})
        atomic_write_json(path, rows)
    rows.sort(key=lambda r: r["score"])
    atomic_write_csv(
        out / "candidates.csv",
        rows,
        ("candidate", "score", "seed", "val_accuracy", "test_accuracy", "train_loss", "seconds"),
    )
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


def load_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it is absent or unreadable (then recomputed)."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


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
