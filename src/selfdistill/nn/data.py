"""Built-in data sets for the neural experiments, as whole tensors (train / validation / test).

Every loader returns a :class:`DataSplits`: float32 inputs already normalized, int64 labels, a validation
split carved out of the TRAINING pool (model selection never looks at the test set), optional symmetric
label noise on the training labels only, and an optional batch-level augmentation for train time.

Data sets (``load_data(name, ...)``):

- ``"digits"``: scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes), offline. Split:
  a stratified 20 % test set (``train_test_split(..., random_state=seed)``), then ``val_fraction`` of the
  remaining pool (stratified, same seed) as validation; default 1293 / 144 / 360. Standardized with ONE
  scalar mean and std computed on the training split (constant corner pixels keep std 0 per pixel, and a
  scalar keeps the image structure for CNNs). Input shape (1, 8, 8).
- ``"mnist1d"``: MNIST-1D (Greydanus 2020) generated OFFLINE with ``mnist1d.data.make_dataset`` and the
  package's default arguments (its own fixed generation seed 42, 4000 train / 1000 test, 40 samples long,
  already centred and scaled by the package). Never uses the package's download path. Validation is
  ``val_fraction`` of its train part (stratified, ``seed``). Input shape (1, 40).
- ``"cifar10"`` / ``"cifar100"``: read from a local folder ``root`` with torchvision (download=False);
  standard 50k/10k split, ``val_fraction`` of the 50k held out (stratified, ``seed``); per-channel
  normalization with the usual CIFAR mean/std; train-time augmentation: random crop with 4-pixel padding
  plus horizontal flip (:class:`RandomCropFlip`), applied on the device on whole batches.

Checksums (CIFAR): torchvision's CIFAR classes verify fixed MD5 sums of the official files. By default
(``verify_checksums=True``) we keep that check and use torchvision unchanged; a folder whose files exist
but do not match gets a ``ValueError`` that says so. With ``verify_checksums=False`` the same torchvision
reader is used through a subclass whose integrity check only requires the files to EXIST (for a re-packed
or subsampled copy in the same pickle format, and for this project's tests); a warning says the checksum
was skipped. Nothing is ever downloaded.

Order of operations: split off test (digits only) -> split off validation -> ``subset`` (the first N of the
remaining training examples) -> label noise on the training labels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASET_NAMES",
    "DataSplits",
    "RandomCropFlip",
    "add_symmetric_label_noise",
    "load_data",
]

DATASET_NAMES = ("digits", "mnist1d", "cifar10", "cifar100")

# Usual per-channel statistics of the CIFAR training images (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_CIFAR_LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "files": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                  "test_batch", "batches.meta"),
        "archive": "cifar-10-python.tar.gz",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "files": ("train", "test", "meta"),
        "archive": "cifar-100-python.tar.gz",
        "num_classes": 100,
    },
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class RandomCropFlip:
    """Batch-level random crop (zero-padding in PIXEL space by ``padding``) and horizontal flip.

    The standard CIFAR augmentation (pad 4, random 32x32 crop, flip with probability 1/2), done with one
    gather on whichever device the batch lives on. Inputs are already normalized, so the padding value per
    channel is ``(0 - mean) / std`` (what torchvision's pad-then-normalize gives). All randomness comes from
    the ``generator`` argument (on any device), so a seeded generator gives reproducible batches.
    """

    def __init__(self, padding: int = 4, fill: tuple[float, ...] | None = None, flip: bool = True):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)
        self.fill = tuple(float(v) for v in fill) if fill is not None else None
        self.flip = bool(flip)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"RandomCropFlip expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.padding
        rng_device = generator.device if generator is not None else torch.device("cpu")
        top = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=rng_device).to(x.device)
        left = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=rng_device).to(x.device)
        if self.flip:
            flip = (torch.rand(n, generator=generator, device=rng_device) < 0.5).to(x.device)
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=x.device)
        padded = torch.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=x.device)
        if self.fill is None:
            padded.zero_()
        else:
            if len(self.fill) != c:
                raise ValueError(f"fill has {len(self.fill)} values but the batch has {c} channels")
            fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
            padded.copy_(fill.expand_as(padded))
        padded[:, :, p:p + h, p:p + w] = x
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        rows = top[:, None] + ar_h[None, :]                                   # (N, H)
        cols_fwd = ar_w[None, :]
        cols = left[:, None] + torch.where(flip[:, None], (w - 1) - cols_fwd, cols_fwd)  # (N, W)
        batch_idx = torch.arange(n, device=x.device)[:, None, None, None]
        chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class DataSplits:
    """Train / validation / test tensors of one data set, ready for whole-tensor training.

    For your own tensors, :func:`selfdistill.nn.as_splits` builds one from ``(x, y)`` pairs (and
    :class:`selfdistill.nn.DatasetSplits` holds map-style Datasets instead).

    ``x_*`` are float32 and already normalized, ``y_*`` int64 class indices. ``y_train`` carries the label
    noise (if any); ``clean_y_train`` the labels before noise and ``noise_mask`` (bool) marks the examples
    whose label was changed. ``augment(x_batch, generator)`` is the batch-level train-time augmentation
    (None when the data set has none).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Callable[[Tensor, torch.Generator], Tensor] | None
    clean_y_train: Tensor
    noise_mask: Tensor
    label_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"x_{split} has example shape {tuple(x.shape[1:])}, "
                                 f"expected input_shape {tuple(self.input_shape)}")
        if self.clean_y_train.shape != self.y_train.shape or self.noise_mask.shape != self.y_train.shape:
            raise ValueError("clean_y_train and noise_mask must have the shape of y_train")

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy with every tensor moved to ``device`` (the augmentation is device-agnostic)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **moved)

    def __repr__(self) -> str:
        return (f"DataSplits(name={self.name!r}, train={self.num_train}, val={self.num_val}, "
                f"test={self.num_test}, num_classes={self.num_classes}, input_shape={self.input_shape}, "
                f"label_noise={self.label_noise}, noisy={int(self.noise_mask.sum())}, "
                f"augment={self.augment!r}, device={self.x_train.device})")


def add_symmetric_label_noise(labels: np.ndarray, num_classes: int, fraction: float,
                              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric label noise: exactly ``round(fraction * n)`` examples, chosen uniformly at random, get a
    label drawn uniformly from the OTHER ``num_classes - 1`` classes. Returns (noisy_labels, noise_mask)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label_noise must be in [0, 1) (1 would leave no correct label), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1ABE1]))
    count = int(round(fraction * n))
    chosen = rng.permutation(n)[:count]
    noisy = labels.copy()
    if count and num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=count)) % num_classes
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return noisy, mask


def _split_validation(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int):
    """Seeded hold-out of ``val_fraction`` of (x, y); returns x_tr, y_tr, x_val, y_val. Stratified by class
    whenever possible (every class has >= 2 examples and both parts have room for every class; otherwise,
    e.g. for tiny test folders, a plain seeded random split)."""
    if val_fraction == 0.0:
        return x, y, x[:0], y[:0]
    from sklearn.model_selection import train_test_split

    n, counts = len(y), np.bincount(y)
    present = int((counts > 0).sum())
    n_val = math.ceil(val_fraction * n)
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training examples out of {n}")
    stratifiable = counts[counts > 0].min() >= 2 and n_val >= present and n - n_val >= present
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=val_fraction, random_state=seed,
                                                stratify=y if stratifiable else None)
    return x_tr, y_tr, x_val, y_val


def _load_digits_arrays(seed: int, val_fraction: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]          # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_tr, y_tr, x_val, y_val = _split_validation(x_pool, y_pool, val_fraction, seed)
    mean, std = float(x_tr.mean()), float(x_tr.std())

    def norm(a: np.ndarray) -> np.ndarray:
        return (a - mean) / std

    return norm(x_tr), y_tr, norm(x_val), y_val, norm(x_test), y_test, 10, (1, 8, 8), None


_MNIST1D_CACHE: dict[str, np.ndarray] = {}


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline (about 3 s, cached per process). The package seeds the GLOBAL NumPy and
    ``random`` generators; we restore both afterwards so loading data has no side effect on them."""
    if not _MNIST1D_CACHE:
        import random

        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the 'mnist1d' package is needed for name='mnist1d': "
                              "pip install 'selfdistill[torch]' (or pip install mnist1d)") from err
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            raw = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        _MNIST1D_CACHE.update({k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")})
    return _MNIST1D_CACHE


def _load_mnist1d_arrays(seed: int, val_fraction: float):
    raw = _mnist1d_arrays()
    x = raw["x"].astype(np.float32)[:, None, :]
    x_test = raw["x_test"].astype(np.float32)[:, None, :]
    y, y_test = raw["y"].astype(np.int64), raw["y_test"].astype(np.int64)
    x_tr, y_tr, x_val, y_val = _split_validation(x, y, val_fraction, seed)
    return x_tr, y_tr, x_val, y_val, x_test, y_test, 10, (1, 40), None


def _cifar_missing_message(name: str, root: Path, missing: list[str]) -> str:
    layout = _CIFAR_LAYOUT[name]
    folder = root / layout["folder"]
    return (f"{name}: expected {folder}/ ({', '.join(layout['files'])}); missing: {', '.join(missing)}. "
            f"Download {layout['archive']} from {_CIFAR_URL} and extract it into {root} "
            f"(it creates {layout['folder']}/). Nothing is downloaded automatically.")


def _torchvision_cifar_class(name: str, verify_checksums: bool):
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100
    if verify_checksums:
        return base

    class _ExistenceCheckedCIFAR(base):  # type: ignore[misc, valid-type]
        """torchvision's reader with the MD5 check replaced by an existence check (verify_checksums=False)."""

        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, f)) for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            import pickle

            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as infile:
                self.classes = pickle.load(infile, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    _ExistenceCheckedCIFAR.__name__ = f"ExistenceChecked{base.__name__}"
    return _ExistenceCheckedCIFAR


def _load_cifar_arrays(name: str, root: str | Path | None, seed: int, val_fraction: float,
                       verify_checksums: bool):
    layout = _CIFAR_LAYOUT[name]
    if root is None:
        where = ("no data root was given: on the command line pass --data-root <folder that holds it> "
                 "(or set data.root in the config); in Python pass root=<folder that holds it>")
        raise FileNotFoundError(_cifar_missing_message(name, Path("<root>"), ["root was not given"])
                                .replace("missing: root was not given", where))
    root = Path(root).expanduser()
    folder = root / layout["folder"]
    missing = [f for f in layout["files"] if not (folder / f).is_file()]
    if missing:
        if not folder.is_dir():
            missing = [f"{folder}/ (the whole folder)"]
        raise FileNotFoundError(_cifar_missing_message(name, root, missing))
    cls = _torchvision_cifar_class(name, verify_checksums)
    if not verify_checksums:
        warnings.warn(f"{name}: MD5 checksums of the files in {folder} were NOT verified "
                      "(verify_checksums=False)", stacklevel=3)
    try:
        train_set = cls(root=str(root), train=True, download=False)
        test_set = cls(root=str(root), train=False, download=False)
    except RuntimeError as err:
        if not verify_checksums:
            raise
        raise ValueError(f"{name}: the files in {folder} exist but do not match the official MD5 "
                         f"checksums (torchvision: {err}). Re-extract {layout['archive']} from "
                         f"{_CIFAR_URL}, or pass verify_checksums=False to load a re-packed copy in the same "
                         "format.") from err
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)

    def to_array(ds) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(ds.data).transpose(0, 3, 1, 2).astype(np.float32) / 255.0   # HWC -> CHW
        return (x - mean_a) / std_a, np.asarray(ds.targets, dtype=np.int64)

    x, y = to_array(train_set)
    x_test, y_test = to_array(test_set)
    x_tr, y_tr, x_val, y_val = _split_validation(x, y, val_fraction, seed)
    fill = tuple(float(-m / s) for m, s in zip(mean, std, strict=True))
    return (x_tr, y_tr, x_val, y_val, x_test, y_test, layout["num_classes"], (3, 32, 32),
            RandomCropFlip(padding=4, fill=fill))


def load_data(name: str, *, root: str | Path | None = None, val_fraction: float = 0.1,
              label_noise: float = 0.0, seed: int = 0, subset: int | None = None,
              verify_checksums: bool = True) -> DataSplits:
    """Load a data set by name into train / validation / test tensors (see the module docstring).

    Parameters
    ----------
    name : one of ``DATASET_NAMES``.
    root : folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/`` (CIFAR only).
    val_fraction : fraction of the training pool held out (stratified) as validation, in [0, 1).
    label_noise : fraction of TRAINING examples whose label is replaced by a uniformly random other
        class (symmetric noise, seeded); validation and test labels stay clean.
    seed : seeds the splits and the label noise.
    subset : keep only the first ``subset`` training examples (after the validation split).
    verify_checksums : CIFAR only; see the module docstring.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown data set name {name!r}; known: {', '.join(DATASET_NAMES)}")
    if not (isinstance(val_fraction, int | float) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not (isinstance(label_noise, int | float) and 0.0 <= label_noise < 1.0):
        raise ValueError(f"label_noise must be in [0, 1) (1 would leave no correct label), "
                         f"got {label_noise!r}")
    if subset is not None and (int(subset) != subset or subset < 1):
        raise ValueError(f"subset must be a positive integer or None, got {subset!r}")

    if key == "digits":
        arrays = _load_digits_arrays(seed, val_fraction)
    elif key == "mnist1d":
        arrays = _load_mnist1d_arrays(seed, val_fraction)
    else:
        arrays = _load_cifar_arrays(key, root, seed, val_fraction, verify_checksums)
    x_tr, y_tr, x_val, y_val, x_test, y_test, num_classes, input_shape, augment = arrays

    if subset is not None:
        x_tr, y_tr = x_tr[:subset], y_tr[:subset]
    noisy, mask = add_symmetric_label_noise(y_tr, num_classes, float(label_noise), seed)

    def t(a: np.ndarray, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return DataSplits(
        name=key,
        x_train=t(x_tr, torch.float32), y_train=t(noisy, torch.int64),
        x_val=t(x_val, torch.float32), y_val=t(y_val, torch.int64),
        x_test=t(x_test, torch.float32), y_test=t(y_test, torch.int64),
        num_classes=num_classes, input_shape=tuple(input_shape), augment=augment,
        clean_y_train=t(y_tr, torch.int64), noise_mask=torch.as_tensor(mask),
        label_noise=float(label_noise), seed=int(seed),
    )
