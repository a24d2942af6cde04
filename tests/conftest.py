"""Suite-wide settings: one torch thread per test (pytest-xdist runs one process per core; with 2 cores
shared by other processes, OpenMP threads spin against each other: measured here, 2 ms per tiny-CNN step
with 1 thread vs 280 ms with 2 under load), matplotlib without a display."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

try:  # torch is an optional extra: the kernel tests run without it
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is missing
    torch = None


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with one torch thread, and a test that changes the count does not leak it."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


_FOLDER_HOLDER = """
import sys, time
from selfdistill.io import RunFolder
folder = RunFolder(sys.argv[1]).acquire()  # bound: the lock lives as long as the object
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold_folder():
    """``hold_folder(path, seconds=120)`` starts another process that owns ``path`` (a ``RunFolder``) and
    returns it once the lock is held; every holder is killed (and its pipe closed) after the test."""
    import subprocess
    import sys

    started = []

    def start(path, seconds: float = 120):
        proc = subprocess.Popen(
            [sys.executable, "-c", _FOLDER_HOLDER, str(path), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        proc.stdout.close()
