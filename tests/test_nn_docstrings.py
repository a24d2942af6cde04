"""The examples in the docstrings run: the losses (documented like torch.nn's), the Python API, the inputs."""

from __future__ import annotations

import doctest

import pytest
import torch

import selfdistill.nn.api
import selfdistill.nn.inputs
import selfdistill.nn.losses
import selfdistill.nn.methods


@pytest.mark.parametrize(
    "module", [selfdistill.nn.losses, selfdistill.nn.api, selfdistill.nn.inputs, selfdistill.nn.methods]
)
def test_docstring_examples_run(module):
    with torch.random.fork_rng(devices=[]):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if module is not selfdistill.nn.inputs:
        assert result.attempted > 0


def test_every_loss_documents_math_shapes_and_an_example():
    from selfdistill.nn import losses

    for cls in (
        losses.SoftmaxL2Loss,
        losses.SoftCrossEntropyLoss,
        losses.TemperatureKLLoss,
        losses.HardLabelCrossEntropyLoss,
        losses.ProbabilityTargetPTLoss,
    ):
        doc = cls.__doc__
        for section in (".. math::", "Parameters\n    ----------", "Notes\n    -----", "Shapes:",
                        "Examples\n    --------", ">>> "):  # fmt: skip
            assert section in doc, (cls.__name__, section)
