"""One configuration schema for ``selfdistill train`` and ``selfdistill distill``: YAML -> typed dataclasses.

Both commands read a YAML file (or a shipped config by name), apply ``--set key.sub=value`` overrides to
the raw mapping, and validate it into dataclasses; unknown keys are rejected with the list of allowed
ones, a bad value gets a one-line ValueError naming its key. The sections ``data``, ``model`` and
``optimizer`` (and ``device``) have ONE definition, used by both commands. Numbers are read as YAML 1.2
numbers (``1e-3`` and ``1e6`` are floats, which PyYAML alone reads as strings), in every key.

Shared sections (defaults after the colon; keys without a default are required)::

    data:
      name:                              # digits | mnist1d | cifar10 | cifar100 (selfdistill.nn.data)
      root: null                         # folder holding the CIFAR files (or --data-root)
      val_fraction: 0.1                  # held out of the TRAINING pool for model selection / the search
      label_noise: 0.0                   # symmetric noise on the training labels, in [0, 1)
      subset: null                       # keep the first N training examples
      seed: 0                            # split and label-noise seed (fixed across seeds of a run)
      verify_checksums: true             # CIFAR MD5 check (torchvision)
    model:
      name:                              # mlp | cnn | cnn1d | resnet20 | resnet50 | vgg16 (nn.models)
      hidden_sizes: [256, 256]           # any other key is passed to build_model(name, ..., **kwargs)
    optimizer:                           # written sections must give the budget: steps OR epochs
      name: adam                         # adam | sgd
      lr: 0.001
      weight_decay: 0.0                  # coupled L2 "added to the loss" (the paper) unless decoupled
      weight_decay_mode: l2              # l2 | decoupled (AdamW)
      momentum: 0.9                      # sgd only
      batch_size: 64
      steps: null
      epochs: null
      eval_every: 50                     # steps between train-loss checks (early-stopping comparison)
    device: auto                         # auto | cpu | cuda (selfdistill.nn.distributed.resolve_device)

``selfdistill train`` (:class:`ExperimentConfig`): ``name``, ``data``, ``model``, ``loss``, ``optimizer``
(required), and::

    loss:
      name:                              # l2 | soft_ce (ce) | kl | hard_ce | ptloss (selfdistill.nn.losses)
      xi: 1.0                            # targets = xi * teacher + (1 - xi) * labels from round 1 on
      # any other key (temperature for kl; epsilon, temperature for ptloss) goes to build_loss
    chain: {rounds: 10, seeds: 1}        # rounds 0 .. rounds-1; seeds: a count n (0 .. n-1) or a list
    early_stopping_comparison: false     # Figure 6: early-stopped models at equal training loss
    logging: {csv: true, tensorboard: false, progress: true}
    performance:                         # speed switches of the training step (selfdistill.nn.training)
      bf16: false                        # bf16 autocast of the forward pass and loss (evaluation in float32)
      channels_last: false               # channels_last memory for the model and 4-D input batches
      compile: false                     # torch.compile the training forward

The ``performance`` section is written to ``config.yaml`` (and so into the checkpoints' fingerprint) only
when a switch is on: a run with all three off keeps the fingerprint of runs from before the section existed.

``selfdistill distill`` (:class:`DistillConfig`): ``name``, ``data``, ``teacher`` and ``student`` (each
with a ``model`` and an ``optimizer`` section, the teacher also ``seed: 0`` and ``checkpoint: null``)
required, and::

    seeds: 3                             # a count n (0 .. n-1) or a list of student seeds
    methods: {kl: true, temperatures: [2, 4, 8], label_smoothing: [0.1], ptloss_random: true,
              ptloss_selected: true}
    ptloss: {temperature: 1.0, form: full}
    search: {M: 5, n_candidates: 200, scale: 0.25, distribution: uniform, seed: 0, criterion: brier,
             class_wise: true}
    transfer: {source: train, fraction: 0.5, path: null}   # train | held_out | file
    candidate_students: 0

Defaults agree between the commands (``device: auto``, ``data.val_fraction: 0.1``); every shipped config
sets its own values explicitly. A run needs at least :data:`MIN_TRAINING_EXAMPLES` training examples
(after ``data.val_fraction``, ``data.subset`` and, for distill, ``transfer.fraction``).

Resume: a run's folder keeps the validated config as ``config.yaml``; a later run into the same folder
resumes it only if no key that changes results differs (:func:`config_differences`, ignoring the keys of
the config class's ``RESUME_IGNORED_KEYS``), and the checkpoints carry the fingerprint of the same keys
(:func:`result_settings`).
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
RESUME_IGNORED_KEYS = (
    "name",
    "logging",
    "chain.rounds",
    "chain.seeds",
    "early_stopping_comparison",
    "data.root",
)
# the same for distill: more seeds or more candidate students extend a run, they change no finished result
DISTILL_RESUME_IGNORED_KEYS = ("name", "data.root", "seeds", "candidate_students")


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


# --------------------------------------------------------------------------------------- shared sections


@dataclass
class DataConfig:
    name: str
    root: str | None = None
    val_fraction: float = 0.1
    label_noise: float = 0.0
    subset: int | None = None
    seed: int = 0
    verify_checksums: bool = True

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, data_names())
        _range(f"{where}.val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _range(f"{where}.label_noise", self.label_noise, 0.0, 1.0, hi_open=True)  # 1: no label is right
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"{where}.subset must be a positive integer or null; got {self.subset}")

    def load(self) -> Any:
        """The data set (imports torch); errors name the ``data`` key, and a split that leaves fewer than
        :data:`MIN_TRAINING_EXAMPLES` training examples is refused."""
        from selfdistill.nn.data import load_data

        try:
            data = load_data(
                self.name,
                root=self.root,
                val_fraction=self.val_fraction,
                label_noise=self.label_noise,
                seed=self.seed,
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
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

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
    name: str
    xi: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

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
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"
    momentum: float = 0.9
    batch_size: int = 64
    steps: int | None = None
    epochs: float | None = None
    eval_every: int = 50

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
    rounds: int = 10
    seeds: int | list[int] = 1

    def validate(self, where: str) -> None:
        if self.rounds < 1:
            raise ValueError(f"{where}.rounds must be >= 1 (round 0 trains on the labels); got {self.rounds}")
        _check_seeds(f"{where}.seeds", self.seeds)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class LoggingConfig:
    csv: bool = True
    tensorboard: bool = False
    progress: bool = True

    def validate(self, where: str) -> None:
        if not self.csv:
            raise ValueError(
                f"{where}.csv: false is not supported: rounds.csv is always written "
                "(it is part of the resume state); remove the key"
            )


@dataclass
class PerformanceConfig:
    """Speed switches of the training step, all off by default (see selfdistill.nn.training.TrainSpec)."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

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

    name: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    chain: ChainConfig = field(default_factory=ChainConfig)
    early_stopping_comparison: bool = False
    device: str = "auto"
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

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
    model: ModelConfig
    optimizer: OptimizerConfig
    seed: int = 0
    checkpoint: str | None = None  # a teacher.pt to load instead of training

    def validate(self, where: str) -> None:
        if self.seed < 0:
            raise ValueError(f"{where}.seed must be >= 0; got {self.seed}")


@dataclass
class StudentConfig:
    model: ModelConfig
    optimizer: OptimizerConfig

    def validate(self, where: str) -> None:
        pass


@dataclass
class MethodsConfig:
    kl: bool = True
    temperatures: list[float] | None = field(default_factory=lambda: [2.0, 4.0, 8.0])
    label_smoothing: list[float] | None = field(default_factory=lambda: [0.1])
    ptloss_random: bool = True
    ptloss_selected: bool = True

    def validate(self, where: str) -> None:
        self.temperatures = list(self.temperatures or [])
        self.label_smoothing = list(self.label_smoothing or [])
        if any(not (t > 0 and math.isfinite(t)) for t in self.temperatures):
            raise ValueError(f"{where}.temperatures: every T must be positive, got {self.temperatures}")
        if any(not 0 <= a < 1 for a in self.label_smoothing):
            raise ValueError(
                f"{where}.label_smoothing: every a must be in [0, 1), got {self.label_smoothing}"
            )
        if not (self.kl or self.temperatures or self.label_smoothing or self.ptloss_random
                or self.ptloss_selected):  # fmt: skip
            raise ValueError(f"{where}: every method is switched off; nothing to train")


@dataclass
class PTLossConfig:
    temperature: float = 1.0
    form: str = "full"

    def validate(self, where: str) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"{where}.temperature must be a positive number; got {self.temperature}")


@dataclass
class SearchConfig:
    M: int = 5
    n_candidates: int = 200
    scale: float = 0.25
    distribution: str = "uniform"
    seed: int = 0
    criterion: str = "brier"
    class_wise: bool = True

    def validate(self, where: str) -> None:
        if self.n_candidates < 2:
            raise ValueError(f"{where}.n_candidates: need at least 2 (eps = 0 and one random candidate)")
        if self.M < 1:
            raise ValueError(f"{where}.M must be >= 1; got {self.M}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"{where}.scale must be a positive number; got {self.scale}")


@dataclass
class TransferConfig:
    source: str = "train"
    fraction: float = 0.5
    path: str | None = None

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

    name: str
    data: DataConfig
    teacher: TeacherConfig
    student: StudentConfig
    seeds: int | list[int] = 3
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    ptloss: PTLossConfig = field(default_factory=PTLossConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    candidate_students: int = 0
    device: str = "auto"

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
        if self.candidate_students > self.search.n_candidates:
            raise ValueError("candidate_students: cannot exceed search.n_candidates")

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
    ``RESUME_IGNORED_KEYS``): the fingerprint stored in checkpoints, and what :func:`config_differences`
    compares. One definition for both."""
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
