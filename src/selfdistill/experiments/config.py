"""One YAML file per neural self-distillation experiment, validated into dataclasses (no torch import).

Schema (every key optional except ``name``, ``data.name``, ``model.name``, ``loss.name`` and one of
``optimizer.steps`` / ``optimizer.epochs``; unknown keys are rejected with the list of allowed ones)::

    name: digits_mlp_l2                  # experiment name (used in titles)
    data:
      name: digits                       # digits | mnist1d | cifar10 | cifar100
      root: null                         # folder holding the CIFAR files (or --data-root)
      val_fraction: 0.1                  # held out of the TRAINING pool; model selection uses it only
      label_noise: 0.0                   # symmetric noise on the training labels, in [0, 1)
      subset: null                       # keep the first N training examples
      seed: 0                            # split and label-noise seed (fixed across chain seeds)
      verify_checksums: true             # CIFAR MD5 check (torchvision)
    model:
      name: mlp                          # mlp | cnn | cnn1d | resnet20 | resnet50 | vgg16
      hidden_sizes: [256, 256]           # any other key is passed to build_model(name, ..., **kwargs)
    loss:
      name: l2                           # l2 | soft_ce (ce) | kl | hard_ce | ptloss
      xi: 1.0                            # targets = xi * teacher + (1 - xi) * labels from round 1 on
      # any other key (temperature for kl; epsilon, temperature for ptloss) goes to build_loss
    optimizer:
      name: adam                         # adam | sgd
      lr: 0.001
      weight_decay: 0.0                  # coupled L2 "added to the loss" (the paper) unless decoupled
      weight_decay_mode: l2              # l2 | decoupled (AdamW)
      momentum: 0.9                      # sgd only
      batch_size: 64
      steps: 2000                        # the budget: steps OR epochs
      epochs: null
      eval_every: 50                     # steps between train-loss checks (early-stopping comparison)
    chain:
      rounds: 10                         # rounds 0 .. rounds-1 (round 0 trains on the labels)
      seeds: 5                           # an int n (seeds 0 .. n-1) or a list of seeds
    early_stopping_comparison: false     # Figure 6: early-stopped models at equal training loss
    device: auto                         # auto | cpu | cuda
    logging:
      csv: true                          # rounds.csv is always written (it is part of the resume state)
      tensorboard: false                 # needs the tensorboard package
      progress: true                     # tqdm progress bars

Overrides (``--set optimizer.steps=50``) are applied to the raw mapping before validation; the value is
parsed as YAML (``--set chain.seeds=[0,3]``). A config given by a bare name (``digits_mlp_l2``) is looked up
among the configs shipped in ``selfdistill/configs``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DATA_NAMES = ("digits", "mnist1d", "cifar10", "cifar100")
MODEL_NAMES = ("mlp", "cnn", "cnn1d", "resnet20", "resnet50", "vgg16")
LOSS_NAMES = ("l2", "soft_ce", "ce", "kl", "hard_ce", "ptloss")
OPTIMIZER_NAMES = ("adam", "sgd")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
DEVICES = ("auto", "cpu", "cuda")

# keys that may differ between a finished part of a run and its resumption (they do not change results)
RESUME_IGNORED_KEYS = (
    "name",
    "logging",
    "chain.rounds",
    "chain.seeds",
    "early_stopping_comparison",
    "data.root",
)


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
        _choice(f"{where}.name", self.name, DATA_NAMES)
        _range(f"{where}.val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _range(f"{where}.label_noise", self.label_noise, 0.0, 1.0, hi_open=True)  # 1: no label is right
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"{where}.subset must be a positive integer or null; got {self.subset}")


@dataclass
class ModelConfig:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, MODEL_NAMES)


@dataclass
class LossConfig:
    name: str
    xi: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        _choice(f"{where}.name", self.name, LOSS_NAMES)


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
        _choice(f"{where}.name", self.name, OPTIMIZER_NAMES)
        _choice(f"{where}.weight_decay_mode", self.weight_decay_mode, WEIGHT_DECAY_MODES)
        if self.lr <= 0:
            raise ValueError(f"{where}.lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
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
        if self.epochs is not None and self.epochs <= 0:
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


@dataclass
class ChainConfig:
    rounds: int = 10
    seeds: int | list[int] = 1

    def validate(self, where: str) -> None:
        if self.rounds < 1:
            raise ValueError(f"{where}.rounds must be >= 1 (round 0 trains on the labels); got {self.rounds}")
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ValueError(
                    f"{where}.seeds must be a positive count or a list of seeds; got {self.seeds}"
                )
        else:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
                raise ValueError(
                    f"{where}.seeds must be a non-empty list of distinct seeds >= 0; got {self.seeds}"
                )

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
class ExperimentConfig:
    """A validated experiment; ``to_dict()`` gives the canonical mapping written to ``config.yaml``."""

    name: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    chain: ChainConfig = field(default_factory=ChainConfig)
    early_stopping_comparison: bool = False
    device: str = "auto"
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        out["data"] = dataclasses.asdict(self.data)
        out["model"] = {"name": self.model.name, **self.model.kwargs}
        out["loss"] = {"name": self.loss.name, "xi": self.loss.xi, **self.loss.kwargs}
        out["optimizer"] = dataclasses.asdict(self.optimizer)
        out["chain"] = dataclasses.asdict(self.chain)
        out["early_stopping_comparison"] = self.early_stopping_comparison
        out["device"] = self.device
        out["logging"] = dataclasses.asdict(self.logging)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------- parsing


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(allowed)}")


def _range(key: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    if not (lo <= value < hi if hi_open else lo <= value <= hi):
        raise ValueError(f"{key} must be in [{lo}, {hi}{')' if hi_open else ']'}; got {value}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the annotation ``hint``; ints pass as floats, numeric strings as floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(key, value, arg)
            except ValueError:
                continue
        raise ValueError(f"{key} must be {_type_name(hint)}; got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
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


def optimizer_config(raw: Any, where: str = "optimizer") -> OptimizerConfig:
    """Validate an optimizer section (the same schema wherever a config trains a model)."""
    return _section(OptimizerConfig, raw, where)


def _section(cls: type, raw: Any, where: str, free_kwargs: bool = False) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping (key: value lines); got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "kwargs"]
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in names:
            values[key] = _coerce(f"{where}.{key}", value, hints[key])
        elif free_kwargs:
            extra[str(key)] = value
        else:
            raise ValueError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(names)}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name in names
        and f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}")
    obj = cls(**values, **({"kwargs": extra} if free_kwargs else {}))
    obj.validate(where)
    return obj


TOP_LEVEL = {
    "name": None,
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "chain": ChainConfig,
    "early_stopping_comparison": None,
    "device": None,
    "logging": LoggingConfig,
}


def config_from_dict(raw: Any, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the file must hold a mapping of sections; got {type(raw).__name__}")
    if "teacher" in raw:  # (also when --set added a chain section to a distillation config)
        raise ValueError(
            f"{source}: this is a distillation config (it has a 'teacher' section); run it with "
            "`selfdistill distill`, not `selfdistill train`"
        )
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(TOP_LEVEL)}")
    for required in ("name", "data", "model", "loss", "optimizer"):
        if required not in raw:
            raise ValueError(f"{source}: missing required key {required!r}")
    name = raw["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: name must be a non-empty string; got {name!r}")
    device = raw.get("device", "auto")
    _choice("device", device, DEVICES)
    es = raw.get("early_stopping_comparison", False)
    if not isinstance(es, bool):
        raise ValueError(f"early_stopping_comparison must be true or false; got {es!r}")
    return ExperimentConfig(
        name=name,
        data=_section(DataConfig, raw["data"], "data"),
        model=_section(ModelConfig, raw["model"], "model", free_kwargs=True),
        loss=_section(LossConfig, raw["loss"], "loss", free_kwargs=True),
        optimizer=_section(OptimizerConfig, raw["optimizer"], "optimizer"),
        chain=_section(ChainConfig, raw.get("chain", {}), "chain"),
        early_stopping_comparison=es,
        device=device,
        logging=_section(LoggingConfig, raw.get("logging", {}), "logging"),
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (value parsed as YAML) to a copy of ``raw``."""
    result = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.steps=50")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({err})") from err
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


def read_yaml(path: str | Path) -> Any:
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment config (a file path or a shipped config's name)."""
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    try:
        return config_from_dict(apply_overrides(raw, overrides), source=str(path))
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = RESUME_IGNORED_KEYS
) -> list[str]:
    """Human-readable ``key: saved -> current`` lines for the keys that change results."""

    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in ignore)

    a, b = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} in the folder, {b.get(key, '<absent>')!r} now")
    return lines


def check_out_is_folder(out: Path) -> None:
    """Refuse an --out that exists as a file (every process of a run checks this before any work)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder (it is created if needed)")


def prepare_out_dir(out: Path) -> None:
    """Create the output folder, or raise a ValueError saying why --out cannot be used."""
    check_out_is_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"--out {out}: cannot create the output folder ({err}); choose a writable folder"
        ) from None


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
        help="discard a previous run in --out (even with a different config) instead of resuming it",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
