"""The examples in the docstrings run: the losses (documented like torch.nn's), the Python API, the inputs,
the training budget, and PTLoss (the loss, the proxy teacher, the truncated form, the search)."""

from __future__ import annotations

import doctest

import pytest
import torch

import selfdistill.nn.api
import selfdistill.nn.inputs
import selfdistill.nn.losses
import selfdistill.nn.methods
import selfdistill.nn.training
import selfdistill.ptloss.loss
import selfdistill.ptloss.proxy
import selfdistill.ptloss.search
import selfdistill.ptloss.truncated

MODULES = [
    selfdistill.nn.losses,
    selfdistill.nn.api,
    selfdistill.nn.inputs,
    selfdistill.nn.methods,
    selfdistill.nn.training,
    selfdistill.ptloss.loss,
    selfdistill.ptloss.proxy,
    selfdistill.ptloss.truncated,
    selfdistill.ptloss.search,
]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
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


def test_ptloss_api_documents_parameters_and_an_example():
    from selfdistill import ptloss

    sections = {
        ptloss.PTLoss: (".. math::", "Parameters\n    ----------", "Notes\n    -----", "Shapes:"),
        ptloss.pt_loss: (".. math::", "Parameters\n    ----------", "Returns\n    -------"),
        ptloss.pt_loss_from_probabilities: ("Parameters\n    ----------", "Returns\n    -------"),
        ptloss.proxy_teacher: (".. math::", "Parameters\n    ----------", "Returns\n    -------"),
        ptloss.select_perturbation: (".. math::", "Parameters\n    ----------", "Returns\n    -------"),
        ptloss.PerturbationSearchResult: ("Attributes\n    ----------",),
    }
    for obj, required in sections.items():
        for section in (*required, "Examples\n    --------", ">>> "):
            assert section in obj.__doc__, (obj.__name__, section)
