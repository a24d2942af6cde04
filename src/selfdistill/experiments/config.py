"""One configuration schema for ``selfdistill train`` and ``selfdistill distill``: YAML -> typed dataclasses.

Both commands read a YAML file (or a shipped config by name), apply ``--set key.sub=value`` overrides to
the raw mapping, and validate it into dataclasses; unknown keys are rejected with the list of allowed
ones, a bad value gets a one-line ValueError naming its key. The sections ``data``, ``model`` and
``optimizer`` (and ``device``) have ONE definition, used by both commands. Numbers are read as YAML 1.2
numbers (``1e-3`` and ``1e6`` are floats, which PyYAML alone reads as strings), in every key.

Every key carries its meaning beside its definition (``_key(default, doc=...)``); ``selfdistill config
train`` / ``selfdistill config distill`` print them all with type and default (:func:`describe_keys`),
with the options of each model (read from ``selfdistill.nn.models``) and loss.

Seed axes. ``data.seeds`` (data seeds: the splits and the label-noise draw) and the model seeds
(``chain.seeds`` for ``train``; ``teacher.seeds`` and the student ``seeds`` for ``distill``) are separate
axes; a run covers every combination, and results are paired per combination. The older single
``data.seed`` / ``teacher.seed`` are still read (as a one-seed list) and written as ``seeds``.

The ``performance`` section (``bf16``, ``channels_last``, ``compile``: speed switches of the training step,
all off by default) is written to ``config.yaml`` (and so into the checkpoints' fingerprint) only when a
switch is on: a run with all three off keeps the fingerprint of runs from before the section existed.

Defaults agree between the commands (``device: auto``, ``data.val_fraction: 0.1``); every shipped config
sets its own values explicitly. A run needs at least :data:`MIN_TRAINING_EXAMPLES` training examples
(after ``data.val_fraction``, ``data.subset`` and, for distill, ``transfer.fraction``).

Resume: a run's folder keeps the validated config as ``config.yaml``; a later run into the same folder
resumes it only if no key that changes results differs (:func:`config_differences`, ignoring the keys of
the config class's ``RESUME_IGNORED_KEYS``: more seeds, rounds or comparisons extend a run), and the
checkpoints carry the fingerprint of the same keys (:func:`result_settings`) plus their own seeds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from selfdistill.io import flatten_mapping, mapping_differences

TRANSFER_SOURCES = ("train", "held_out", "file")
MIN_TRAINING_EXAMPLES = 10  # fewer cannot train anything meaningful: a one-line error names the key

# keys of a train config that may differ between a finished part of a run and its resumption
# (more rounds, more data or model seeds, more comparisons extend a run; they change no finished result; the
# data seed of each chain is part of its checkpoints' fingerprint, see selfdistill.experiments.train)
RESUME_IGNORED_KEYS = (
    "name",
    "logging",
    "chain.rounds",
    "chain.seeds",
    "data.seeds",
    "early_stopping_comparison",
    "plain_early_stopping",
    "data.root",
)
# the same for distill: more seeds (data, teacher, student) or more candidate students extend a run; the
# data and teacher seeds of a teacher are part of its fingerprint (selfdistill.experiments.distill)
DISTILL_RESUME_IGNORED_KEYS = (
    "name",
    "data.root",
    "data.seeds",
    "teacher.seeds",
    "seeds",
    "candidate_students",
)


# --------------------------------------------------------------------------- name lists (the nn registries)


def data_names() -> tuple[str, ...]:
    from selfdistill.nn.data import DATASET_NAMES

    return DATASET_NAMES


def model_names() -> tuple[str, ...]:
    from selfdistill.nn.models import MODEL_NAMES

    return MODEL_NAMES


def loss_names() -> tuple[str, ...]:
    from selfdistill.nn.losses import LOSS_NAMES

    return LOSS_NAMES


def optimizer_names() -> tuple[str, ...]:
    from selfdistill.nn.training import OPTIMIZERS

    return OPTIMIZERS


def weight_decay_modes() -> tuple[str, ...]:
    from selfdistill.nn.training import WEIGHT_DECAY_MODES

    return WEIGHT_DECAY_MODES


def device_names() -> tuple[str, ...]:
    from selfdistill.nn.distributed import DEVICE_NAMES

    return DEVICE_NAMES


# --------------------------------------------------------------------------------------- key documentation


def _key(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, doc: str,
         legacy: bool = False) -> Any:  # fmt: skip
    """A config field with its one-line meaning (``selfdistill config`` prints it). ``legacy`` marks an
    older spelling kept readable: normalized into its successor by ``validate`` and never written."""
    metadata = {"doc": doc, "legacy": legacy}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _seed_axis(where: str, new: str, seeds: int | list[int] | None, old: str, seed: int | None) -> list[int]:
    """The seed list of an axis given by the new key (``seeds``: a count or a list) or the older single
    ``seed``; both at once is ambiguous and refused. Default: seed 0."""
    if seeds is not None and seed is not None:
        raise ValueError(
            f"{where}: give {where}.{new} (a count or a list) or the older {where}.{old} (one seed), not both"
        )
    if seed is not None:
        if seed < 0:
            raise ValueError(f"{where}.{old} must be >= 0; got {seed}")
        return [int(seed)]
    return _check_seeds(f"{where}.{new}", 1 if seeds is None else seeds)


# --------------------------------------------------------------------------------------- shared sections


@dataclass
class DataConfig:
    name: str = _key(doc="data set: digits | mnist1d | cifar10 | cifar100 (selfdistill.nn.data.load_data)")
    root: str | None = _key(None, doc="folder holding the CIFAR files (or --data-root); unused otherwise")
    val_fraction: float = _key(
        0.1, doc="fraction of the TRAINING pool held out as validation (model selection, the PTLoss search); "
        "its labels are clean"
    )
    label_noise: float = _key(
        0.0, doc="fraction of training labels replaced by a uniformly drawn other class (symmetric noise); "
        "validation and test labels stay clean"
    )
    subset: int | None = _key(None, doc="keep the first N training examples (null: all)")
    seeds: int | list[int] | None = _key(
        None, doc="DATA seeds, one axis of the run: each draws the splits and the label noise; a count n "
        "(0 .. n-1) or a list (null: [0]); results are paired per data seed"
    )
    seed: int | None = _key(None, doc="older spelling of data.seeds with one seed", legacy=True)
    verify_checksums: bool = _key(True, doc="check the CIFAR files' MD5 sums (torchvision)")

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, data_names())
        _range(f"{where}.val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _range(f"{where}.label_noise", self.label_noise, 0.0, 1.0, hi_open=True)  # 1: no label is right
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"{where}.subset must be a positive integer or null; got {self.subset}")
        self.seeds, self.seed = _seed_axis(where, "seeds", self.seeds, "seed", self.seed), None

    @property
    def seed_list(self) -> list[int]:
        return _check_seeds("data.seeds", 1 if self.seeds is None else self.seeds)

    def load(self, seed: int | None = None) -> Any:
        """The data set of data seed ``seed`` (default: the first of ``seeds``; imports torch); errors name
        the ``data`` key, and a split that leaves fewer than :data:`MIN_TRAINING_EXAMPLES` training examples
        is refused."""
        from selfdistill.nn.data import load_data

        seed = self.seed_list[0] if seed is None else int(seed)
        try:
            data = load_data(
                self.name,
                root=self.root,
                val_fraction=self.val_fraction,
                label_noise=self.label_noise,
                seed=seed,
                subset=self.subset,
                verify_checksums=self.verify_checksums,
            )
        except ValueError as err:
            raise ValueError(f"data: {err}") from None
        if data.num_train < MIN_TRAINING_EXAMPLES:
            small_subset = self.subset is not None and self.subset < MIN_TRAINING_EXAMPLES
            key, value, fix = (
                ("data.subset", self.subset, "raise data.subset")
                if small_subset
                else ("data.val_fraction", self.val_fraction, "lower data.val_fraction")
            )
            raise ValueError(
                f"{key}={value} leaves {data.num_train} training examples, fewer than "
                f"{MIN_TRAINING_EXAMPLES}; {fix}"
            )
        return data


@dataclass
class ModelConfig:
    name: str = _key(doc="the network: mlp | cnn | cnn1d | resnet20 | resnet50 | vgg16 (nn.models)")
    kwargs: dict[str, Any] = _key(
        factory=dict, doc="any other key is an option of the model (listed per model below)"
    )

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, model_names())

    def factory(self, data: Any) -> Any:
        """A function building a fresh model of this section for ``data`` (imports torch)."""
        from selfdistill.nn.models import build_model

        name, kwargs = self.name, dict(self.kwargs)

        def build():
            return build_model(name, data.num_classes, data.input_shape, **kwargs)

        return build


@dataclass
class LossConfig:
    name: str = _key(doc="training loss: l2 | soft_ce (ce) | kl | hard_ce | ptloss (selfdistill.nn.losses)")
    xi: float = _key(
        1.0, doc="targets = xi * teacher + (1 - xi) * labels from round 1 on (1: pure self-distillation)"
    )
    kwargs: dict[str, Any] = _key(
        factory=dict, doc="any other key is an option of the loss (listed per loss below)"
    )

    def validate(self, where: str) -> None:
        from selfdistill.nn.losses import PROBABILITY_TARGET_LOSSES

        _choice(f"{where}.name", self.name, loss_names())
        if not math.isfinite(self.xi):
            raise ValueError(f"{where}.xi must be a finite number; got {self.xi}")
        if self.name in PROBABILITY_TARGET_LOSSES and not 0.0 <= self.xi <= 1.0:
            raise ValueError(
                f"{where}.xi={self.xi:g} cannot be used with {where}.name: {self.name}: for xi outside "
                "[0, 1] "
                "the targets xi * teacher + (1 - xi) * labels have negative entries, and "
                f"{self.name} takes the logarithm of its targets (NaN losses whatever the learning rate); "
                f"use {where}.name: l2 or soft_ce, or xi in [0, 1]"
            )


@dataclass
class OptimizerConfig:
    name: str = _key("adam", doc="adam | sgd")
    lr: float = _key(1e-3, doc="learning rate")
    weight_decay: float = _key(0.0, doc="weight decay (coupled L2 'added to the loss', as in the paper, "
                               "unless weight_decay_mode is decoupled)")  # fmt: skip
    weight_decay_mode: str = _key("l2", doc="l2 (coupled, the paper) | decoupled (AdamW; adam only)")
    momentum: float = _key(0.9, doc="momentum (sgd only)")
    batch_size: int = _key(64, doc="examples per step")
    steps: int | None = _key(None, doc="optimizer steps per training run (give steps OR epochs)")
    epochs: float | None = _key(None, doc="passes over the training set per run (give steps OR epochs)")
    eval_every: int = _key(
        50, doc="steps between checks of a run in progress (early-stopping comparisons, validation checks)"
    )

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, optimizer_names())
        _choice(f"{where}.weight_decay_mode", self.weight_decay_mode, weight_decay_modes())
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"{where}.lr must be a positive number; got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"{where}.weight_decay must be >= 0; got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"{where}.batch_size must be >= 1; got {self.batch_size}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"{where}: give exactly one of steps and epochs (the training budget per round); "
                f"got steps={self.steps}, epochs={self.epochs}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"{where}.steps must be >= 1; got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"{where}.epochs must be > 0; got {self.epochs}")
        if self.eval_every < 1:
            raise ValueError(f"{where}.eval_every must be >= 1; got {self.eval_every}")
        if self.name == "sgd" and self.weight_decay_mode == "decoupled":
            raise ValueError(f"{where}.weight_decay_mode: decoupled is supported with adam (AdamW) only")

    def to_train_spec(self):
        """The :class:`selfdistill.nn.training.TrainSpec` of this section (imports torch)."""
        from selfdistill.nn.training import TrainSpec

        return TrainSpec(
            optimizer=self.name,
            lr=self.lr,
            weight_decay=self.weight_decay,
            weight_decay_mode=self.weight_decay_mode,
            momentum=self.momentum,
            batch_size=self.batch_size,
            steps=self.steps,
            epochs=self.epochs,
            check_every=self.eval_every,
        )


def _check_seeds(key: str, seeds: int | list[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"{key} must be a positive count or a list of seeds; got {seeds}")
        return list(range(seeds))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{key} must be a non-empty list of distinct seeds >= 0; got {seeds}")
    return list(seeds)


def _check_device(device: str) -> None:
    _choice("device", device, device_names())


# ------------------------------------------------------------------------------------- train: the chain


@dataclass
class ChainConfig:
    rounds: int = _key(10, doc="rounds 0 .. rounds-1 (round 0 trains on the labels)")
    seeds: int | list[int] = _key(
        1, doc="MODEL seeds, the other axis of the run: each draws the initialization and batch order of "
        "every round; a count n (0 .. n-1) or a list; every data seed runs every model seed"
    )

    def validate(self, where: str) -> None:
        if self.rounds < 1:
            raise ValueError(f"{where}.rounds must be >= 1 (round 0 trains on the labels); got {self.rounds}")
        _check_seeds(f"{where}.seeds", self.seeds)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class LoggingConfig:
    csv: bool = _key(True, doc="rounds.csv is always written (it is part of the resume state)")
    tensorboard: bool = _key(False, doc="also write TensorBoard scalars to <out>/tensorboard")
    progress: bool = _key(True, doc="progress bars on stderr (or --no-progress)")

    def validate(self, where: str) -> None:
        if not self.csv:
            raise ValueError(
                f"{where}.csv: false is not supported: rounds.csv is always written "
                "(it is part of the resume state); remove the key"
            )


@dataclass
class PerformanceConfig:
    """Speed switches of the training step, all off by default (see selfdistill.nn.training.TrainSpec)."""

    bf16: bool = _key(False, doc="bf16 autocast of the training forward and loss (evaluation in float32)")
    channels_last: bool = _key(False, doc="channels_last memory format for the model and 4-D input batches")
    compile: bool = _key(False, doc="torch.compile the training forward (slow to start; for long runs)")

    def validate(self, where: str) -> None:
        pass

    @property
    def any_on(self) -> bool:
        return self.bf16 or self.channels_last or self.compile


@dataclass
class ExperimentConfig:
    """A validated ``selfdistill train`` config; ``to_dict()`` is the canonical mapping of ``config.yaml``."""

    KIND: ClassVar[str] = "train"
    RESUME_IGNORED_KEYS: ClassVar[tuple[str, ...]] = RESUME_IGNORED_KEYS

    name: str = _key(doc="the run's name (the default output folder is results/<name>)")
    data: DataConfig = _key(doc="the data set, its splits, label noise and data seeds")
    model: ModelConfig = _key(doc="the network trained at every round")
    loss: LossConfig = _key(doc="the loss of every round against its targets")
    optimizer: OptimizerConfig = _key(doc="optimizer and budget of every round")
    chain: ChainConfig = _key(factory=ChainConfig, doc="rounds and model seeds")
    early_stopping_comparison: bool = _key(
        False, doc="Figure 6: models trained on the labels, stopped at each round's training loss"
    )
    plain_early_stopping: bool = _key(
        False, doc="also train, per data seed and model seed, a plain model on the labels (round 0's "
        "initialization and batches) kept at the validation check with the best accuracy (every "
        "optimizer.eval_every steps); paired against the rounds"
    )
    device: str = _key("auto", doc="auto | cpu | cuda")
    logging: LoggingConfig = _key(factory=LoggingConfig, doc="what is logged besides rounds.csv")
    performance: PerformanceConfig = _key(
        factory=PerformanceConfig, doc="speed switches of the training step (bf16, channels_last, compile)"
    )

    def validate(self, where: str) -> None:
        _check_name(where, self.name)
        _check_device(self.device)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> ExperimentConfig:
        return config_from_dict(raw, source)

    def to_dict(self) -> dict[str, Any]:
        mapping = _to_dict(self)
        if not self.performance.any_on:  # module docstring: absent when every switch is off
            del mapping["performance"]
        return mapping

    def train_spec(self) -> Any:
        """The :class:`selfdistill.nn.training.TrainSpec` of the ``optimizer`` and ``performance``
        sections (imports torch)."""
        return dataclasses.replace(
            self.optimizer.to_train_spec(),
            bf16=self.performance.bf16,
            channels_last=self.performance.channels_last,
            compile=self.performance.compile,
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------- distill sections


@dataclass
class TeacherConfig:
    model: ModelConfig = _key(doc="the teacher network")
    optimizer: OptimizerConfig = _key(doc="the teacher's optimizer and budget (trained on the labels)")
    seeds: int | list[int] | None = _key(
        None, doc="TEACHER seeds (initialization, batch order): a count n (0 .. n-1) or a list (null: [0]); "
        "every data seed trains every teacher seed, each with its own search and students"
    )
    seed: int | None = _key(None, doc="older spelling of teacher.seeds with one seed", legacy=True)
    checkpoint: str | None = _key(
        None, doc="a teacher.pt (written by selfdistill distill) to load instead of training; one teacher, "
        "so one data seed and one teacher seed"
    )

    def validate(self, where: str) -> None:
        self.seeds, self.seed = _seed_axis(where, "seeds", self.seeds, "seed", self.seed), None

    @property
    def seed_list(self) -> list[int]:
        return _check_seeds("teacher.seeds", 1 if self.seeds is None else self.seeds)


@dataclass
class StudentConfig:
    model: ModelConfig = _key(doc="the student network")
    optimizer: OptimizerConfig = _key(doc="the student's optimizer and budget (trained on the transfer set)")

    def validate(self, where: str) -> None:
        pass


@dataclass
class MethodsConfig:
    kl: bool = _key(True, doc="KL(p_t || p_s) at T = 1")
    temperatures: list[float] | None = _key(
        factory=lambda: [2.0, 4.0, 8.0], doc="temperature KD (T^2 KL of the softened distributions) at each T"
    )
    label_smoothing: list[float] | None = _key(
        factory=lambda: [0.1], doc="KL at T = 1 to the smoothed teacher (1 - a) p_t + a / C, for each a"
    )
    ptloss_random: bool = _key(
        True, doc="PTLoss with a random eps (the first eligible random candidate) at the selected T"
    )
    ptloss_selected: bool = _key(
        True, doc="PTLoss with the (eps, T) whose proxy teacher has the best validation score (the search)"
    )
    ptloss_per_temperature: bool = _key(
        True, doc="with several ptloss.temperature values: PTLoss with the eps selected at each T "
        "(ptloss_T<T>), to pair with kd_T<T>"
    )
    ptloss_val_selected: bool = _key(
        False, doc="PTLoss with the (eps, T) whose students have the best mean validation accuracy "
        "(val_selection): the obvious alternative to the risk-bound selection"
    )

    def validate(self, where: str) -> None:
        self.temperatures = list(self.temperatures or [])
        self.label_smoothing = list(self.label_smoothing or [])
        if any(not (t > 0 and math.isfinite(t)) for t in self.temperatures):
            raise ValueError(f"{where}.temperatures: every T must be positive, got {self.temperatures}")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"{where}.temperatures: a T appears twice in {self.temperatures}")
        if any(not 0 <= a < 1 for a in self.label_smoothing):
            raise ValueError(
                f"{where}.label_smoothing: every a must be in [0, 1), got {self.label_smoothing}"
            )
        if not (self.kl or self.temperatures or self.label_smoothing or self.ptloss_random
                or self.ptloss_selected or self.ptloss_val_selected):  # fmt: skip
            raise ValueError(f"{where}: every method is switched off; nothing to train")


@dataclass
class PTLossConfig:
    temperature: float | list[float] = _key(
        1.0, doc="T of the PTLoss students: a number, or a grid searched jointly with eps (the search "
        "scores the proxy of the loss trained at each T)"
    )
    form: str = _key("full", doc="full (KL + perturbation) | truncated (first M series terms only)")

    def validate(self, where: str) -> None:
        from selfdistill.ptloss.loss import FORMS

        grid = self.temperature if isinstance(self.temperature, list) else [self.temperature]
        if not grid or any(not (t > 0 and math.isfinite(t)) for t in grid):
            raise ValueError(f"{where}.temperature must be a positive number or a list of them; got "
                             f"{self.temperature}")  # fmt: skip
        if len(set(grid)) != len(grid):
            raise ValueError(f"{where}.temperature: a T appears twice in {grid}")
        _choice(f"{where}.form", self.form, FORMS)

    @property
    def temperatures(self) -> list[float]:
        return list(self.temperature) if isinstance(self.temperature, list) else [self.temperature]


@dataclass
class SearchConfig:
    M: int = _key(5, doc="perturbed series orders m = 1 .. M")
    n_candidates: int = _key(200, doc="candidates eps (candidate 0 is eps = 0, the plain teacher)")
    scale: float = _key(
        0.9, doc="range of the candidates: relative: eps_m = delta / m, delta ~ uniform(-scale, scale) "
        "(convex for scale < 1); uniform / normal: per entry (selfdistill.ptloss.sample_candidates)"
    )
    distribution: str = _key("relative", doc="relative | uniform | normal")
    seed: int = _key(0, doc="seed of the candidate draw (the same candidates for every teacher)")
    criterion: str = _key("brier", doc="score of a proxy teacher on validation: brier | tv | nll")
    class_wise: bool = _key(True, doc="one eps per class (C x M) rather than one shared row (M)")
    require_convex: bool = _key(
        True, doc="only candidates with a certified convex proxy problem may be selected (non-converged "
        "ones never are)"
    )

    def validate(self, where: str) -> None:
        from selfdistill.ptloss.search import CRITERIA, DISTRIBUTIONS

        if self.n_candidates < 2:
            raise ValueError(f"{where}.n_candidates: need at least 2 (eps = 0 and one random candidate)")
        if self.M < 1:
            raise ValueError(f"{where}.M must be >= 1; got {self.M}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"{where}.scale must be a positive number; got {self.scale}")
        _choice(f"{where}.distribution", self.distribution, DISTRIBUTIONS)
        _choice(f"{where}.criterion", self.criterion, CRITERIA)


@dataclass
class ValSelectionConfig:
    candidates: int = _key(
        3, doc="random candidates (the first eligible ones) tried besides eps = 0 at every T of "
        "ptloss.temperature; a student per (candidate, T) and student seed (methods.ptloss_val_selected)"
    )

    def validate(self, where: str) -> None:
        if self.candidates < 1:
            raise ValueError(f"{where}.candidates must be >= 1; got {self.candidates}")


@dataclass
class TransferConfig:
    source: str = _key(
        "train", doc="the student's unlabeled transfer set: train (the teacher's training inputs) | "
        "held_out (a part of the training pool kept from the teacher, labels dropped) | file"
    )
    fraction: float = _key(0.5, doc="held_out only: the fraction of the training pool kept from the teacher")
    path: str | None = _key(
        None, doc="file only: .npy / .npz (array x) / .pt inputs, shape (N, *input shape), preprocessed like "
        "the data set's inputs"
    )

    def validate(self, where: str) -> None:
        _choice(f"{where}.source", self.source, TRANSFER_SOURCES)
        if not 0 < self.fraction < 1:
            raise ValueError(f"{where}.fraction must be in (0, 1); got {self.fraction}")
        if self.source == "file" and not self.path:
            raise ValueError(
                f"{where}.path: source 'file' needs the path of a .npy, .npz or .pt file of inputs"
            )
        if self.source != "file" and self.path:
            raise ValueError(
                f"{where}.path is only read with {where}.source: file (source is {self.source!r})"
            )


@dataclass
class DistillConfig:
    """A validated ``selfdistill distill`` config (see :mod:`selfdistill.experiments.distill`)."""

    KIND: ClassVar[str] = "distill"
    RESUME_IGNORED_KEYS: ClassVar[tuple[str, ...]] = DISTILL_RESUME_IGNORED_KEYS

    name: str = _key(doc="the run's name (the default output folder is results/<name>)")
    data: DataConfig = _key(doc="the data set, its splits, label noise and data seeds")
    teacher: TeacherConfig = _key(doc="the teacher: network, budget, teacher seeds (or a checkpoint)")
    student: StudentConfig = _key(doc="the student: network and budget")
    seeds: int | list[int] = _key(
        3, doc="STUDENT seeds (initialization, batch order): a count n (0 .. n-1) or a list; every teacher "
        "trains every method for every student seed"
    )
    methods: MethodsConfig = _key(factory=MethodsConfig, doc="the distillation methods compared")
    ptloss: PTLossConfig = _key(factory=PTLossConfig, doc="the PTLoss students' temperature(s) and form")
    search: SearchConfig = _key(factory=SearchConfig, doc="the PTLoss perturbation search on validation")
    val_selection: ValSelectionConfig = _key(
        factory=ValSelectionConfig, doc="(eps, T) chosen by the students' validation accuracy"
    )
    transfer: TransferConfig = _key(factory=TransferConfig, doc="the student's unlabeled transfer set")
    candidate_students: int = _key(
        0, doc="PTLoss students for this many (candidate, T) rows spread over the eligible scores, plus the "
        "selected row and eps = 0, each for every student seed (the score-versus-accuracy check)"
    )
    device: str = _key("auto", doc="auto | cpu | cuda")

    def validate(self, where: str) -> None:
        _check_name(where, self.name)
        _check_seeds("seeds", self.seeds)
        _check_device(self.device)
        if self.data.val_fraction == 0:
            raise ValueError(
                "data.val_fraction: the perturbation search needs a labeled validation split (> 0)"
            )
        if self.candidate_students < 0:
            raise ValueError(f"candidate_students: expected a count >= 0, got {self.candidate_students}")
        rows = self.search.n_candidates * len(self.ptloss.temperatures)
        if self.candidate_students > rows:
            raise ValueError(
                f"candidate_students: cannot exceed the {rows} search rows (search.n_candidates x the "
                "temperatures of ptloss.temperature)"
            )
        if self.methods.ptloss_val_selected and self.val_selection.candidates >= self.search.n_candidates:
            raise ValueError(
                f"val_selection.candidates={self.val_selection.candidates} needs that many random candidates "
                f"besides eps = 0; raise search.n_candidates (now {self.search.n_candidates})"
            )
        replicates = len(self.data.seed_list) * len(self.teacher.seed_list)
        if self.teacher.checkpoint and replicates > 1:
            raise ValueError(
                f"teacher.checkpoint is one teacher, but data.seeds x teacher.seeds asks for {replicates}; "
                "give one data seed and one teacher seed, or remove teacher.checkpoint to train them"
            )

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> DistillConfig:
        return distill_config_from_dict(raw, source)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


RunConfig = ExperimentConfig | DistillConfig


# ----------------------------------------------------------------------------------------------- parsing


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: ``1e6`` and ``1e-3`` are floats (PyYAML
    alone needs a dot and reads them as strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python objects (safe; YAML 1.2 numbers, see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


def read_yaml(path: str | Path) -> Any:
    try:
        with open(path) as handle:
            return parse_yaml(handle.read())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(allowed)}")


def _range(key: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    if not (lo <= value < hi if hi_open else lo <= value <= hi):
        raise ValueError(f"{key} must be in [{lo}, {hi}{')' if hi_open else ']'}; got {value}")


def _check_name(where: str, name: str) -> None:
    if not name:
        raise ValueError(f"{where}: name must be a non-empty string; got {name!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true or false"
    if dataclasses.is_dataclass(hint):
        return "a mapping (key: value lines)"
    return getattr(hint, "__name__", str(hint))


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the annotation ``hint``: ints pass as floats, integral floats as ints, numeric
    strings as numbers, mappings as nested sections."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(key, value, arg)
            except ValueError:
                continue
        raise ValueError(f"{key} must be {_type_name(hint)}; got {value!r}")
    if dataclasses.is_dataclass(hint):
        return _section(hint, value, key)
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, str):
            value = _number(value) if _number(value) is not None else value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, str) and _number(value) is not None:
            return float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list):
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ValueError(f"{key} must be {_type_name(hint)}; got {value!r}")


def _section(cls: type, raw: Any, where: str, *, top: bool = False) -> Any:
    """Validate the mapping ``raw`` into the dataclass ``cls`` (``where`` names it in messages: the dotted
    key of a section, or the file for the ``top`` level). A field called ``kwargs`` collects the keys that
    are not fields (model and loss arguments)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping (key: value lines); got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name != "kwargs"]
    names = [f.name for f in fields]
    free_kwargs = "kwargs" in hints
    prefix = "" if top else f"{where}."
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in names:
            values[key] = _coerce(f"{prefix}{key}", value, hints[key])
        elif free_kwargs:
            extra[str(key)] = value
        else:
            raise ValueError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(names)}")
    missing = [
        f.name
        for f in fields
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing required key {', '.join(repr(m) for m in missing)}")
    obj = cls(**values, **({"kwargs": extra} if free_kwargs else {}))
    obj.validate(where)
    return obj


def _to_dict(obj: Any) -> Any:
    """The canonical mapping of a config dataclass (``kwargs`` merged into their section)."""
    if not dataclasses.is_dataclass(obj):
        return copy.deepcopy(obj)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("legacy"):  # an older spelling, normalized into its successor by validate
            continue
        if f.name == "kwargs":
            out.update(copy.deepcopy(value))
        else:
            out[f.name] = _to_dict(value)
    return out


def _top_level(cls: type, raw: Any, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the file must hold a mapping of sections; got {type(raw).__name__}")
    return _section(cls, raw, source, top=True)


def config_from_dict(raw: Any, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping (e.g. parsed YAML) into an :class:`ExperimentConfig` (``selfdistill train``)."""
    if (
        isinstance(raw, dict) and "teacher" in raw
    ):  # (also when --set added a chain section to a distill config)
        raise ValueError(
            f"{source}: this is a distillation config (it has a 'teacher' section); run it with "
            "`selfdistill distill`, not `selfdistill train`"
        )
    return _top_level(ExperimentConfig, raw, source)


def distill_config_from_dict(raw: Any, source: str = "config") -> DistillConfig:
    """Validate a raw mapping into a :class:`DistillConfig` (``selfdistill distill``)."""
    if (
        isinstance(raw, dict) and "chain" in raw
    ):  # (also when --set added a teacher section to a chain config)
        raise ValueError(
            f"{source}: this is a self-distillation chain config (it has a 'chain' section); run it with "
            "`selfdistill train`, not `selfdistill distill`"
        )
    return _top_level(DistillConfig, raw, source)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (value parsed as YAML 1.2) to a copy of ``raw``."""
    result = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.steps=50")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"--set {item!r}: empty key")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as err:
            raise ValueError(
                f"--set {item!r}: the value is not valid YAML ({' '.join(str(err).split())})"
            ) from None
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def shipped_config_names() -> list[str]:
    folder = resources.files("selfdistill") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the name of a shipped config (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and stem in shipped_config_names():
        return Path(str(resources.files("selfdistill") / "configs" / f"{stem}.yaml"))
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config; shipped configs: "
        f"{', '.join(shipped_config_names())}"
    )


def _load(cls: type, name_or_path: str | Path, overrides: list[str] | None) -> Any:
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    try:
        return cls.from_dict(apply_overrides(raw, overrides), source=str(path))
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a ``selfdistill train`` config (a file path or a shipped config's name)."""
    return _load(ExperimentConfig, name_or_path, overrides)


def load_distill_config(name_or_path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    """Read, override and validate a ``selfdistill distill`` config."""
    return _load(DistillConfig, name_or_path, overrides)


def result_settings(config: RunConfig) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` of the keys that change results (every key but the config class's
    ``RESUME_IGNORED_KEYS``): the fingerprint stored in checkpoints, and what
    :func:`~selfdistill.experiments.config.config_differences` compares. One definition for both."""
    ignore = type(config).RESUME_IGNORED_KEYS
    return {
        key: value
        for key, value in flatten_mapping(config.to_dict()).items()
        if not any(key == k or key.startswith(k + ".") for k in ignore)
    }


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = RESUME_IGNORED_KEYS
) -> list[str]:
    """Human-readable ``key: saved in the folder, current now`` lines for the keys that change results."""
    return mapping_differences(saved, current, ignore=ignore)


def add_run_arguments(parser: argparse.ArgumentParser, *, example: str, set_example: str) -> None:
    """The arguments every config-driven command shares (``selfdistill train`` and ``selfdistill distill``):
    CONFIG, --out, --set KEY=VALUE overrides, --data-root, --overwrite/--force, --no-plots."""
    parser.add_argument("config", help=f"a YAML file, or the name of a shipped config (e.g. {example})")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/<name>)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value with a dotted key, e.g. --set {set_example} (repeatable)",
    )
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding the CIFAR files")
    parser.add_argument(
        "--overwrite",
        "--force",
        action="store_true",
        help="empty --out first (everything in it is deleted), even if it holds a run with another config; "
        "a run still running there is never taken over",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")


# ------------------------------------------------------------------------------------- the key reference

# the model classes behind each name of selfdistill.nn.models.build_model (their signatures give the types
# and defaults of the options build_model accepts, selfdistill.nn.models.MODEL_OPTIONS)
_MODEL_CLASSES = {
    "mlp": "MLP",
    "cnn": "SmallCNN",
    "cnn1d": "SmallCNN",
    "resnet20": "CifarResNet",
    "resnet50": None,
    "vgg16": "CifarVGG",
}
# the loss classes behind the loss names of selfdistill.nn.losses.build_loss that take options
_LOSS_CLASSES = {
    "kl": ("selfdistill.nn.losses", "TemperatureKLLoss"),
    "ptloss": ("selfdistill.ptloss", "PTLoss"),
}


def _hint_text(hint: Any) -> str:
    """A type annotation in words: ``int or list of int or null``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list of {_hint_text(typing.get_args(hint)[0])}"
    if origin is dict:
        return "mapping"
    if hint is type(None):
        return "null"
    if isinstance(hint, str):
        return hint
    return getattr(hint, "__name__", str(hint))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else yaml.safe_dump(f.default, default_flow_style=True).strip(
            ).removesuffix("...").strip()  # fmt: skip
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return "(section)"
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return "required"


def config_keys(cls: type) -> list[dict[str, str]]:
    """Every key of the config class ``cls`` (:class:`ExperimentConfig` or :class:`DistillConfig`), sections
    first-level by first-level: ``{"key", "type", "default", "doc"}`` (``kwargs`` fields appear as
    ``section.<option>``). The meanings are the fields' own documentation (``_key(doc=...)``)."""
    out: list[dict[str, str]] = []

    def walk(klass: type, prefix: str) -> None:
        hints = typing.get_type_hints(klass)
        for f in dataclasses.fields(klass):
            key = f"{prefix}{f.name}" if f.name != "kwargs" else f"{prefix}<option>"
            hint = hints[f.name]
            section = dataclasses.is_dataclass(hint)
            doc = f.metadata.get("doc", "")
            if f.metadata.get("legacy"):
                doc += " (still read; written as its successor)"
            out.append({
                "key": key,
                "type": "section" if section else ("any" if f.name == "kwargs" else _hint_text(hint)),
                "default": "(section)" if section else _default_text(f),
                "doc": doc,
            })  # fmt: skip
            if section:
                walk(hint, f"{key}.")

    walk(cls, "")
    return out


def _signature_options(klass: Any, accepted: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
    """``(option, type, default)`` of the constructor arguments of ``klass`` (those in ``accepted`` only,
    when given; an accepted name missing from the signature is listed without type or default)."""
    import inspect

    options = []
    parameters = inspect.signature(klass.__init__).parameters if klass is not None else {}
    for name in accepted if accepted is not None else ():
        if name not in parameters:
            options.append((name, "?", "?"))
    for name, parameter in parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if accepted is not None and name not in accepted:
            continue
        annotation = parameter.annotation
        kind = "" if annotation is inspect.Parameter.empty else _hint_text(annotation)
        default = "required" if parameter.default is inspect.Parameter.empty else repr(parameter.default)
        options.append((name, kind, default))
    return options


def model_options() -> dict[str, dict[str, Any]]:
    """``{model name: {"doc": its description, "options": [(option, type, default)]}}``, read from
    :mod:`selfdistill.nn.models` (its docstring and the constructors' signatures; imports torch)."""
    from selfdistill.nn import models

    docs = _bullets(models.__doc__ or "")
    out = {}
    for name in model_names():
        klass = _MODEL_CLASSES.get(name)
        options = _signature_options(getattr(models, klass) if klass else None, models.MODEL_OPTIONS[name])
        out[name] = {"doc": docs.get(name, ""), "options": options}
    return out


def loss_options() -> dict[str, list[tuple[str, str, str]]]:
    """``{loss name: [(option, type, default)]}`` for the losses of ``selfdistill train`` that take options
    (the constructors' signatures; imports torch)."""
    import importlib

    out = {}
    for name, (module, klass) in _LOSS_CLASSES.items():
        out[name] = _signature_options(getattr(importlib.import_module(module), klass))
    return out


def _bullets(doc: str) -> dict[str, str]:
    """``- ``"name"``: text`` bullets of a module docstring -> ``{name: text}`` (one line each)."""
    found = {}
    for match in re.finditer(r'^- ``"(\w+)"``: (.*?)(?=^- ``|^\S|\Z)', doc, flags=re.M | re.S):
        found[match.group(1)] = " ".join(match.group(2).split())
    return found


def describe_keys(kind: str, *, width: int = 100) -> str:
    """The key reference of ``selfdistill train`` (``kind="train"``) or ``selfdistill distill`` configs:
    every key with its type, default and meaning, then the options of each model (and loss); what
    ``selfdistill config KIND`` prints."""
    import textwrap

    classes = {"train": ExperimentConfig, "distill": DistillConfig}
    if kind not in classes:
        raise ValueError(f"config kind must be one of {', '.join(classes)}; got {kind!r}")
    lines = [
        f"Keys of a `selfdistill {kind}` config (YAML). Override any with --set KEY=VALUE, e.g. "
        f"--set {'optimizer.steps=50' if kind == 'train' else 'student.optimizer.steps=50'}.",
        "Shipped configs (selfdistill " + kind + " NAME): "
        + ", ".join(
            n for n in shipped_config_names() if n.startswith("distill") == (kind == "distill")
        ),  # fmt: skip
        "",
    ]
    indent = " " * 6
    for entry in config_keys(classes[kind]):
        head = f"  {entry['key']}"
        if entry["type"] == "section":
            lines.append(f"{head}:  (section)")
        else:
            lines.append(f"{head}  [{entry['type']}; default: {entry['default']}]")
        lines += textwrap.wrap(entry["doc"], width, initial_indent=indent, subsequent_indent=indent)
    lines += ["", "Model options (keys of any model section besides name; from selfdistill.nn.models):"]
    for name, info in model_options().items():
        lines += textwrap.wrap(f"{name}: {info['doc']}", width, initial_indent="  ", subsequent_indent=indent)
        for option, kind_text, default in info["options"] or [("(none)", "", "")]:
            detail = f" [{kind_text}; default: {default}]" if default else ""
            lines.append(f"{indent}{option}{detail}")
    if kind == "train":
        lines += ["", "Loss options (keys of the loss section besides name and xi):"]
        for name in loss_names():
            options = loss_options().get(name, [])
            text = ", ".join(f"{o} [{t}; default: {d}]" for o, t, d in options) if options else "(none)"
            lines += textwrap.wrap(f"{name}: {text}", width, initial_indent="  ", subsequent_indent=indent)
    return "\n".join(lines)
