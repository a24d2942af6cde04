"""The Examples sections of the documented API (numpydoc docstrings) run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "selfdistill.kernel.estimator",
    "selfdistill.kernel.rounds",
    "selfdistill.kernel.spectrum",
    "selfdistill.kernel.filter_estimators",
    "selfdistill.kernel.lowrank",
    "selfdistill.stats",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
