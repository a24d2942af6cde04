"""Your own data for the neural runs: tensors or map-style Datasets, in one form, checked before training.

Two kinds of data reach a chain (:func:`selfdistill.nn.chain.run_chain`) or a distillation run
(:func:`selfdistill.nn.distill`):

- **tensors**: a :class:`~selfdistill.nn.DataSplits` (what :func:`~selfdistill.nn.load_data`
  returns, or ``(x, y)`` pairs given to :func:`~selfdistill.nn.as_splits`); a batch is ``x[indices]``;
- **Datasets**: a :class:`~selfdistill.nn.DatasetSplits` of map-style ``torch.utils.data.Dataset``
  objects whose items are ``(input, label)`` pairs; batches are read through a ``DataLoader``
  (``num_workers`` worker processes, ``pin_memory``).

Both run the same code (:func:`prepare_data` turns either into a :class:`RunData`). The training batches
are the index batches of ``selfdistill.nn.training.BatchStream``, a stream of permutations drawn from the
round's seeded generator; a DataLoader receives them through its ``batch_sampler``
(:class:`StreamBatchSampler`), so a Dataset holding the same examples gives the same batches, the same
weights and the same numbers as the tensors, and a resumed run stays equal to an uninterrupted one. The
DataLoader's own generator (which seeds its worker processes) is seeded too (:func:`loader_seed`).

Without augmentation the teacher's outputs on the training set are computed once per round, in one
evaluation pass in index order, and looked up by example index in every batch. A training Dataset with
random transforms (augmentation) needs ``train_eval``: the same examples without them, for that pass and
for the training metrics; the teacher then runs on every augmented batch instead.

Checks before any training, each a one-line ``ValueError`` that names the split, the item and the fix
(:func:`prepare_data`, :func:`check_model_output`): an item that is not an ``(input, label)`` pair, an
input that is not a tensor or array, a label that is not an integer class index or lies outside
``[0, num_classes)``, inputs of inconsistent shapes (the index of the first one that differs), splits whose
inputs differ in shape, a random training Dataset without ``train_eval``, and a model whose forward pass
fails on one batch or whose output width is not ``num_classes``. Cost: the start of a run reads every item
of each Dataset once (for the labels and these checks; with workers, inputs stay in the worker processes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset

__all__ = [
    "DatasetInputs",
    "DatasetSplits",
    "RunData",
    "StreamBatchSampler",
    "as_splits",
    "check_model_output",
    "num_examples",
    "prepare_data",
]

_SCAN_BATCH = 256  # items per scanning batch (descriptions only travel back from the workers)
_RANDOM_READS = 3  # reads of item 0 to detect random transforms in a training Dataset


# ------------------------------------------------------------------------------------- Dataset plumbing


class _IndexedInputs(Dataset):
    """``(input, index)`` of each item of a Dataset of ``(input, label)`` pairs (labels known by index)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index][0], index


class DatasetInputs:
    """The inputs of a map-style Dataset of ``(input, label)`` pairs, read in batches by a ``DataLoader``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Map-style: ``len(dataset)`` and ``dataset[i] -> (input, label)``.
    num_workers : int
        Worker processes of every DataLoader (0: read in the main process).
    pin_memory : bool
        Page-locked batches for fast copies to a CUDA device (ignored without CUDA).
    """

    def __init__(self, dataset: Any, *, num_workers: int = 0, pin_memory: bool = False) -> None:
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0; got {num_workers!r}")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (
            f"DatasetInputs({type(self.dataset).__name__}, {len(self)} items, "
            f"num_workers={self.num_workers}, pin_memory={self.pin_memory})"
        )

    def loader(
        self, *, batch_size: int | None = None, batch_sampler: Sampler | None = None, seed: int = 0
    ) -> DataLoader:
        """A DataLoader of ``(x, indices)`` batches: the items in order, ``batch_size`` at a time, or the
        index batches of ``batch_sampler``. ``seed`` seeds the DataLoader's own generator (the seeds of its
        worker processes), so it never draws from the global RNG."""
        options: dict[str, Any] = (
            {"batch_size": batch_size, "shuffle": False}
            if batch_sampler is None
            else {"batch_sampler": batch_sampler}
        )
        return DataLoader(
            _IndexedInputs(self.dataset),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(int(seed)),
            **options,
        )

    def head(self, count: int) -> Tensor:
        """The first ``count`` inputs as one batch (collated like a DataLoader batch)."""
        from torch.utils.data import default_collate

        return default_collate([self.dataset[i][0] for i in range(min(count, len(self)))])


class StreamBatchSampler(Sampler):
    """``steps`` index batches from ``stream.next()`` (a ``selfdistill.nn.training.BatchStream``), each
    passed through ``transform`` (e.g. this rank's shard), as a DataLoader ``batch_sampler``. The
    stream draws lazily, in the main process, from the round's generator: the same index batches as the
    tensor path, however many workers prefetch."""

    def __init__(self, stream: Any, steps: int, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.stream = stream
        self.steps = int(steps)
        self.transform = transform

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            batch = self.stream.next()
            if self.transform is not None:
                batch = self.transform(batch)
            yield batch.tolist()


def loader_seed(generator: torch.Generator) -> int:
    """The seed of a DataLoader's own generator, derived from the round's ``generator`` (which the DataLoader
    must not draw from: its draws would shift the batch stream)."""
    state = np.random.SeedSequence([generator.initial_seed(), 0xDA7A]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def num_examples(inputs: Tensor | DatasetInputs) -> int:
    """Rows of a tensor, or items of a Dataset."""
    return int(inputs.shape[0]) if isinstance(inputs, Tensor) else len(inputs)


# ------------------------------------------------------------------------------------------- containers


@dataclass(kw_only=True)
class DatasetSplits:
    """Train / validation / test map-style Datasets of ``(input, label)`` pairs (Datasets path).

    Parameters
    ----------
    train : torch.utils.data.Dataset
        The training examples; ``train[i]`` is ``(input, label)``, ``input`` a tensor (or NumPy array),
        ``label`` an integer class index in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    val, test : torch.utils.data.Dataset or None
        Validation (chooses the best round) and test (reported, never used to choose); None: no such
        split (its metrics are NaN).
    train_eval : torch.utils.data.Dataset or None
        When ``train`` applies random transforms (augmentation): the same examples, in the same order,
        without them. They give the training metrics and the teacher's cached outputs; the teacher then
        runs on each augmented training batch. Must be None when ``train`` is deterministic.
    clean_train_labels : Tensor or None
        Labels of ``train`` before any label noise you added (for the ``train_acc_clean`` column);
        default: the labels of ``train``.
    num_workers, pin_memory
        DataLoader options (:class:`~selfdistill.nn.inputs.DatasetInputs`).
    name : str
        Shown in messages and tables.
    """

    train: Any
    num_classes: int
    val: Any = None
    test: Any = None
    train_eval: Any = None
    clean_train_labels: Tensor | None = field(default=None, repr=False)
    num_workers: int = 0
    pin_memory: bool = False
    name: str = "datasets"

    def __post_init__(self) -> None:
        _check_num_classes(self.num_classes)
        for split in ("train", "val", "test", "train_eval"):
            dataset = getattr(self, split)
            if dataset is not None or split == "train":
                _check_map_style(dataset, split)

    def inputs(self, dataset: Any) -> DatasetInputs:
        return DatasetInputs(dataset, num_workers=self.num_workers, pin_memory=self.pin_memory)


@dataclass
class RunData:
    """The data of a run in one form for tensors and Datasets (built and checked by :func:`prepare_data`).

    ``train`` gives the training batches; ``train_eval`` the same examples without augmentation (training
    metrics, the teacher's cached outputs); ``augment`` is a batch-level augmentation (tensors only);
    ``random_train`` says that ``train`` returns random views (a Dataset with random transforms). Labels
    are int64 CPU tensors.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train: Tensor | DatasetInputs
    train_eval: Tensor | DatasetInputs
    y_train: Tensor
    clean_y_train: Tensor
    val: Tensor | DatasetInputs
    y_val: Tensor
    test: Tensor | DatasetInputs
    y_test: Tensor
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    random_train: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def augmented(self) -> bool:
        """True when each training batch is a random view, so the teacher must see each batch itself."""
        return self.augment is not None or self.random_train

    @property
    def num_train(self) -> int:
        return num_examples(self.train)


# --------------------------------------------------------------------------------------------- checks


def _check_num_classes(num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer (labels are 0 .. num_classes-1); got {num_classes!r}"
        )


def _check_map_style(dataset: Any, split: str) -> None:
    if isinstance(dataset, IterableDataset):
        raise ValueError(
            f"{split}: an IterableDataset has no indices to cache the teacher's outputs by; give a map-style "
            "Dataset (len(ds) and ds[i] -> (input, label))"
        )
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(
            f"{split}: expected a map-style Dataset (len(ds) and ds[i] -> (input, label)) or an (x, y) pair "
            f"of tensors; got {type(dataset).__name__}"
        )


def _label_value(label: Any) -> int | None:
    """The integer class index of ``label`` (an int, a NumPy integer, or a one-element integer tensor or
    array), or None if it is not one."""
    if isinstance(label, bool | np.bool_):
        return None
    if isinstance(label, int | np.integer):
        return int(label)
    if isinstance(label, np.ndarray) and label.size == 1 and label.dtype.kind in "iu":
        return int(label.reshape(-1)[0])
    if isinstance(label, Tensor) and label.numel() == 1:
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            return None
        return int(label.reshape(-1)[0])
    return None


def _describe(item: Any) -> tuple[str | None, tuple[int, ...] | None, int | None]:
    """``(problem, input shape, label)`` of one item; never raises."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        kind = type(item).__name__ + (f" of length {len(item)}" if isinstance(item, tuple | list) else "")
        return (
            f"is a {kind}, not an (input, label) pair; make __getitem__ return (input, label)",
            None,
            None,
        )
    x, label = item
    if not isinstance(x, Tensor | np.ndarray):
        return (
            f"has an input of type {type(x).__module__}.{type(x).__name__}; inputs must be tensors or NumPy "
            "arrays (e.g. add torchvision.transforms.ToTensor() to the Dataset's transform)",
            None,
            None,
        )
    value = _label_value(label)
    if value is None:
        return (
            f"has label {label!r} ({type(label).__name__}), not an integer class index; return an int "
            "(or an integer 0-d tensor) as the label",
            tuple(x.shape),
            None,
        )
    return None, tuple(x.shape), value


class _Described(Dataset):
    """``(index, problem, shape, label)`` of each item of a Dataset (read in the workers, never raises)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, str | None, Any, Any]:
        try:
            item = self.dataset[index]
        except Exception as err:  # the user's __getitem__: report it as this item's problem
            first = (str(err).strip().splitlines() or [""])[0][:160]
            return index, f"could not be read ({type(err).__name__}: {first})", None, None
        return (index, *_describe(item))


def _as_list(batch: list) -> list:
    return batch


def scan_dataset(
    dataset: Any, num_classes: int, split: str, *, num_workers: int = 0
) -> tuple[Tensor, tuple[int, ...]]:
    """Read every item of ``dataset`` once: ``(labels, input shape)``, or a one-line ValueError naming the
    first bad item (not a pair, an input that is not a tensor, a label that is not an integer class index in
    ``[0, num_classes)``, an input shape unlike item 0's)."""
    n = len(dataset)
    if n == 0:
        return torch.empty(0, dtype=torch.int64), ()
    labels = np.empty(n, dtype=np.int64)
    reference: tuple[int, ...] | None = None
    loader = DataLoader(
        _Described(dataset),
        batch_size=_SCAN_BATCH,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.random.fork_rng(devices=[]):  # random transforms read in this process leave no trace
        for batch in loader:
            for index, problem, shape, label in batch:
                where = f"{split} dataset: item {index}"
                if problem is not None:
                    raise ValueError(f"{where} {problem}")
                if reference is None:
                    reference = shape
                elif shape != reference:
                    raise ValueError(
                        f"{where} has an input of shape {shape} but item 0 has {reference}; every input "
                        "must have the same shape (resize or crop them in the Dataset)"
                    )
                if not 0 <= label < num_classes:
                    raise ValueError(
                        f"{where} has label {label}, outside [0, {num_classes}) (num_classes={num_classes}); "
                        "labels must be class indices 0 .. num_classes-1"
                    )
                labels[index] = label
    return torch.from_numpy(labels), tuple(reference or ())


def _check_tensor_labels(labels: Any, num_classes: int, name: str, n: int) -> Tensor:
    """``labels`` as an int64 CPU tensor of ``n`` class indices in ``[0, num_classes)``, or a one-line
    ValueError naming ``name`` (and the first bad index)."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a tensor of class indices; got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per input); got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices; got dtype {labels.dtype} (convert with .long())"
        )
    labels = labels.cpu().long()
    if n:
        bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(
                f"{name}[{i}] = {int(labels[i])} is outside [0, {num_classes}) (num_classes={num_classes}); "
                "labels must be class indices 0 .. num_classes-1"
            )
    return labels


def _is_random(dataset: Any) -> bool:
    """Whether reading item 0 again gives another input (random transforms), with the RNG state kept."""
    with torch.random.fork_rng(devices=[]):
        first = torch.as_tensor(np.asarray(dataset[0][0]))
        for _ in range(_RANDOM_READS - 1):
            again = torch.as_tensor(np.asarray(dataset[0][0]))
            if again.shape != first.shape or not torch.equal(again, first):
                return True
    return False


def _prepare_datasets(data: DatasetSplits) -> RunData:
    c = int(data.num_classes)
    workers = data.num_workers
    evaluated = data.train_eval if data.train_eval is not None else data.train
    y_train, shape = scan_dataset(
        evaluated, c, "train_eval" if data.train_eval is not None else "train", num_workers=workers
    )
    if len(evaluated) == 0:
        raise ValueError("train dataset is empty: nothing to train on")
    random_train = data.train_eval is not None
    if data.train_eval is None and _is_random(data.train):
        raise ValueError(
            "train dataset returns a different input each time item 0 is read (random transforms, e.g. "
            "augmentation): pass train_eval=<the same examples without random transforms>, used for the "
            "training metrics and the teacher's cached outputs"
        )
    if random_train:
        if len(data.train) != len(data.train_eval):
            raise ValueError(
                f"train_eval has {len(data.train_eval)} items but train has {len(data.train)}; train_eval "
                "must hold the same examples in the same order"
            )
        for i in sorted({0, len(data.train) // 2, len(data.train) - 1}):
            problem, item_shape, label = _describe(data.train[i])
            if problem is not None:
                raise ValueError(f"train dataset: item {i} {problem}")
            if label != int(y_train[i]) or item_shape != shape:
                raise ValueError(
                    f"train dataset: item {i} (label {label}, shape {item_shape}) differs from train_eval's "
                    f"(label {int(y_train[i])}, shape {shape}); train_eval must hold the same examples in "
                    "the same order"
                )
    splits = {}
    for split in ("val", "test"):
        dataset = getattr(data, split)
        if dataset is None:
            splits[split] = (torch.empty(0, *shape), torch.empty(0, dtype=torch.int64))
            continue
        labels, split_shape = scan_dataset(dataset, c, split, num_workers=workers)
        if len(dataset) and split_shape != shape:
            raise ValueError(
                f"{split} dataset has inputs of shape {split_shape} but the training inputs have {shape}; "
                "every split must be preprocessed alike"
            )
        splits[split] = (data.inputs(dataset), labels)
    clean = y_train
    if data.clean_train_labels is not None:
        clean = _check_tensor_labels(
            torch.as_tensor(data.clean_train_labels), c, "clean_train_labels", len(evaluated)
        )
    return RunData(
        name=data.name,
        num_classes=c,
        input_shape=shape,
        train=data.inputs(data.train),
        train_eval=data.inputs(evaluated),
        y_train=y_train,
        clean_y_train=clean,
        val=splits["val"][0],
        y_val=splits["val"][1],
        test=splits["test"][0],
        y_test=splits["test"][1],
        random_train=random_train,
    )


def _prepare_tensors(data: Any) -> RunData:
    """A :class:`~selfdistill.nn.DataSplits` (or any object with its ``x_*``/``y_*`` fields)."""
    c = int(data.num_classes)
    _check_num_classes(c)
    x_train = data.x_train
    if not isinstance(x_train, Tensor):
        raise ValueError(f"x_train must be a tensor; got {type(x_train).__name__}")
    if x_train.shape[0] < 1:
        raise ValueError("x_train is empty: nothing to train on")
    shape = tuple(x_train.shape[1:])
    labels = {}
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        if not isinstance(x, Tensor):
            raise ValueError(f"x_{split} must be a tensor; got {type(x).__name__}")
        if x.shape[0] and tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x_{split} has inputs of shape {tuple(x.shape[1:])} but x_train has {shape}; every split "
                "must be preprocessed alike"
            )
        labels[split] = _check_tensor_labels(getattr(data, f"y_{split}"), c, f"y_{split}", x.shape[0])
    clean = getattr(data, "clean_y_train", None)
    if clean is None:
        clean = labels["train"]
    else:
        clean = _check_tensor_labels(clean, c, "clean_y_train", x_train.shape[0])
    return RunData(
        name=str(getattr(data, "name", "tensors")),
        num_classes=c,
        input_shape=shape,
        train=x_train,
        train_eval=x_train,
        y_train=labels["train"],
        clean_y_train=clean,
        val=data.x_val,
        y_val=labels["val"],
        test=data.x_test,
        y_test=labels["test"],
        augment=getattr(data, "augment", None),
    )


def prepare_data(data: Any) -> RunData:
    """Check ``data`` (a :class:`~selfdistill.nn.DataSplits`, a :class:`~selfdistill.nn.DatasetSplits` or a
    :class:`RunData`) and return it as a :class:`RunData` (module docstring: the checks)."""
    if isinstance(data, RunData):
        return data
    if isinstance(data, DatasetSplits):
        return _prepare_datasets(data)
    if all(hasattr(data, f) for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")):
        return _prepare_tensors(data)
    raise ValueError(
        f"data must be a DataSplits, a DatasetSplits or a RunData (see selfdistill.nn.as_splits); got "
        f"{type(data).__name__}"
    )


def head_batch(inputs: Tensor | DatasetInputs, count: int = 2) -> Tensor:
    """The first ``count`` inputs as one batch."""
    return inputs[:count] if isinstance(inputs, Tensor) else inputs.head(count)


def check_model_output(
    model_factory: Callable[[], nn.Module],
    data: RunData,
    device: torch.device | str = "cpu",
    *,
    role: str = "model",
) -> None:
    """Build one model and run one forward pass (eval mode, no grad) on the first two training inputs; a
    model that is not an ``nn.Module``, fails on the inputs or does not output ``(batch, num_classes)``
    logits gets a one-line ValueError. The caller's random state is left as it was."""
    device = torch.device(device)
    x = head_batch(data.train_eval, 2)
    with torch.random.fork_rng(devices=[]):
        model = model_factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{role}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    model.to(device).eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as err:  # the user's forward: name what it was given
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{role}: the forward pass on {x.shape[0]} training inputs (batch shape {tuple(x.shape)}) failed "
            f"({type(err).__name__}: {first}); the model must take the data's inputs"
        ) from None
    if not isinstance(out, Tensor):
        raise ValueError(
            f"{role}: the forward pass returned a {type(out).__name__}; it must return the logits, a tensor "
            "(batch, num_classes)"
        )
    expected = (x.shape[0], data.num_classes)
    if tuple(out.shape) != expected:
        width = out.shape[-1] if out.ndim else "no"
        raise ValueError(
            f"{role}: outputs of shape {tuple(out.shape)} for a batch of {x.shape[0]}, i.e. {width} values "
            f"per example, but num_classes is {data.num_classes}; build the model with {data.num_classes} "
            f"outputs (e.g. torchvision or timm: num_classes={data.num_classes})"
        )


# ------------------------------------------------------------------------------------------ user input


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, Tensor | np.ndarray) for v in value)
    )


def _tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return torch.as_tensor(value, dtype=torch.get_default_dtype())
        return torch.as_tensor(value)
    if isinstance(value, Tensor):
        return value
    raise ValueError(f"{what} must be a tensor or a NumPy array; got {type(value).__name__}")


def as_splits(
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    num_classes: int | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    train_eval: Any = None,
    clean_train_labels: Tensor | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    name: str | None = None,
) -> Any:
    """Your data as the splits a run takes: a :class:`~selfdistill.nn.DataSplits` (tensors) or a
    :class:`~selfdistill.nn.DatasetSplits` (Datasets).

    Parameters
    ----------
    train : (x, y) pair, Dataset, DataSplits or DatasetSplits
        ``(x, y)``: inputs ``(N, ...)`` and integer labels ``(N,)`` (tensors or NumPy arrays; floating NumPy
        inputs become float32). A map-style Dataset of ``(input, label)`` items. A ``DataSplits`` or
        ``DatasetSplits`` is returned as it is (then give nothing else).
    val, test : (x, y) pair, Dataset or None
        Validation (chooses the best round) and test split; None: none. If any split is a Dataset, the
        ``(x, y)`` pairs become ``TensorDataset`` objects and everything is read through DataLoaders.
    num_classes : int
        Number of classes (required unless ``train`` is a ``DataSplits``/``DatasetSplits``).
    augment : callable or None
        Tensors only: ``augment(x_batch, generator) -> x_batch`` applied to each training batch (e.g.
        :class:`~selfdistill.nn.RandomCropFlip`); with Datasets, put random transforms in the Dataset
        and give ``train_eval``.
    train_eval, clean_train_labels, num_workers, pin_memory
        Datasets: see :class:`~selfdistill.nn.DatasetSplits` (``clean_train_labels`` also works with tensors).
    name : str or None
        Shown in messages and tables.
    """
    from selfdistill.nn.data import DataSplits

    if isinstance(train, DataSplits | DatasetSplits):
        extra = {
            "val": val,
            "test": test,
            "augment": augment,
            "train_eval": train_eval,
            "clean_train_labels": clean_train_labels,
        }
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise ValueError(
                f"train is a {type(train).__name__}, which already holds every split and option; do not also "
                f"give {', '.join(given)}"
            )
        if num_classes is not None and int(num_classes) != int(train.num_classes):
            raise ValueError(
                f"num_classes={num_classes} but the {type(train).__name__} has "
                f"num_classes={train.num_classes}"
            )
        return train
    if num_classes is None:
        raise ValueError("num_classes: give the number of classes (labels are 0 .. num_classes-1)")
    _check_num_classes(num_classes)
    splits = {"train": train, "val": val, "test": test}
    for split, value in splits.items():
        if value is not None and not _is_pair(value):
            _check_map_style(value, split)
    if any(v is not None and not _is_pair(v) for v in splits.values()) or train_eval is not None:
        if augment is not None:
            raise ValueError(
                "augment works with tensors; with Datasets put the random transforms in the training Dataset "
                "and give train_eval (the same examples without them)"
            )
        datasets = {
            k: (
                TensorDataset(_tensor(v[0], f"{k} inputs"), _tensor(v[1], f"{k} labels"))
                if _is_pair(v)
                else v
            )
            for k, v in splits.items()
        }
        return DatasetSplits(
            **datasets,
            num_classes=int(num_classes),
            train_eval=train_eval,
            clean_train_labels=clean_train_labels,
            num_workers=num_workers,
            pin_memory=pin_memory,
            name=name or "datasets",
        )
    x_train, y_train = _tensor(train[0], "train inputs"), _tensor(train[1], "train labels")
    tensors = {"train": (x_train, y_train)}
    for split in ("val", "test"):
        value = splits[split]
        if value is None:
            tensors[split] = (x_train[:0], y_train[:0])
        else:
            tensors[split] = (_tensor(value[0], f"{split} inputs"), _tensor(value[1], f"{split} labels"))
    shape = tuple(x_train.shape[1:])
    for split, (x, y) in tensors.items():
        if x.ndim < 1 or (x.shape[0] and tuple(x.shape[1:]) != shape):
            raise ValueError(
                f"{split} inputs have shape {tuple(x.shape[1:])} per example but the training inputs have "
                f"{shape}; every split must be preprocessed alike"
            )
        if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{split}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}; give one label per input"
            )
    for split, (_, y) in tensors.items():
        _check_tensor_labels(y, int(num_classes), f"{split} labels", y.shape[0])
    clean = y_train if clean_train_labels is None else _tensor(clean_train_labels, "clean_train_labels")
    _check_tensor_labels(clean, int(num_classes), "clean_train_labels", y_train.shape[0])
    return DataSplits(
        name=name or "tensors",
        x_train=x_train,
        y_train=y_train.long(),
        x_val=tensors["val"][0],
        y_val=tensors["val"][1].long(),
        x_test=tensors["test"][0],
        y_test=tensors["test"][1].long(),
        num_classes=int(num_classes),
        input_shape=shape,
        augment=augment,
        clean_y_train=clean.long(),
        noise_mask=clean.long() != y_train.long(),
    )
