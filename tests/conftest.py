"""Suite-wide settings: one torch thread per test process (pytest-xdist runs one process per core; more
threads on a 2-core machine slow tiny models down by orders of magnitude), matplotlib without a display."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

try:  # torch is an optional extra: the kernel tests run without it
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is missing
    torch = None

if torch is not None:
    torch.set_num_threads(1)
