"""Neural self-distillation (PyTorch): chains and distillation on your own model and data, losses, models.

In a few lines (:mod:`selfdistill.nn.api`)::

    from selfdistill.nn import TrainSpec, self_distill
    result = self_distill(model_factory, train, val, test, num_classes=10, rounds=4,
                          training=TrainSpec(steps=500))     # train/val/test: (x, y) tensors or Datasets
    print(result); result.plot(); result.best_round

Importing this package imports torch only; scikit-learn, torchvision, mnist1d and matplotlib are imported
lazily by the functions that need them (plots live in :mod:`selfdistill.nn.plots`).
"""

from selfdistill.nn.api import DistillationResult, distill, self_distill
from selfdistill.nn.chain import ChainHooks, ChainSpec, NeuralChainResult, run_chain, train_round
from selfdistill.nn.data import DATASET_NAMES, DataSplits, RandomCropFlip, load_data
from selfdistill.nn.inputs import DatasetSplits, as_splits
from selfdistill.nn.losses import (
    LOSS_NAMES,
    HardLabelCrossEntropyLoss,
    ProbabilityTargetPTLoss,
    SoftCrossEntropyLoss,
    SoftmaxL2Loss,
    TemperatureKLLoss,
    build_loss,
    check_probabilities,
    mix_targets,
)
from selfdistill.nn.methods import DistillationMethod, build_method, method_kinds
from selfdistill.nn.models import MODEL_NAMES, build_model, count_parameters
from selfdistill.nn.training import TrainSpec

__all__ = [
    "DATASET_NAMES",
    "LOSS_NAMES",
    "MODEL_NAMES",
    "ChainHooks",
    "ChainSpec",
    "DataSplits",
    "DatasetSplits",
    "DistillationMethod",
    "DistillationResult",
    "HardLabelCrossEntropyLoss",
    "NeuralChainResult",
    "ProbabilityTargetPTLoss",
    "RandomCropFlip",
    "SoftCrossEntropyLoss",
    "SoftmaxL2Loss",
    "TemperatureKLLoss",
    "TrainSpec",
    "as_splits",
    "build_loss",
    "build_method",
    "build_model",
    "check_probabilities",
    "count_parameters",
    "distill",
    "load_data",
    "method_kinds",
    "mix_targets",
    "run_chain",
    "self_distill",
    "train_round",
]
