"""Neural self-distillation building blocks (PyTorch): data, models, losses.

Importing this package imports torch only; scikit-learn, torchvision, mnist1d and matplotlib are imported
lazily by the functions that need them (plots live in :mod:`selfdistill.nn.plots`).
"""

from selfdistill.nn.data import DATASET_NAMES, DataSplits, RandomCropFlip, load_data
from selfdistill.nn.losses import (
    LOSS_NAMES,
    HardLabelCrossEntropyLoss,
    SoftCrossEntropyLoss,
    SoftmaxL2Loss,
    TemperatureKLLoss,
    build_loss,
    check_probabilities,
    mix_targets,
)
from selfdistill.nn.models import MODEL_NAMES, build_model, count_parameters

__all__ = [
    "DATASET_NAMES",
    "LOSS_NAMES",
    "MODEL_NAMES",
    "DataSplits",
    "HardLabelCrossEntropyLoss",
    "RandomCropFlip",
    "SoftCrossEntropyLoss",
    "SoftmaxL2Loss",
    "TemperatureKLLoss",
    "build_loss",
    "build_model",
    "check_probabilities",
    "count_parameters",
    "load_data",
    "mix_targets",
]
