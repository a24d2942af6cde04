"""Atomic files: a long chain never leaves a half-written checkpoint or table behind.

Every write goes to a temporary file in the destination folder and is then moved into place with
``os.replace`` (atomic on POSIX and Windows), so a run killed at any instant leaves either the old file or
the new one, never a truncated one. A checkpoint that cannot be read is treated as absent by the chain.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from selfdistill.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text

__all__ = [
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (temporary file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`save_checkpoint`; ``None`` if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or corrupted file: recompute rather than crash
        return None
