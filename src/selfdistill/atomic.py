"""Atomic file writes (NumPy-free, torch-free): a long run never leaves a half-written file behind.

Every write goes to a temporary file in the destination folder, is flushed to disk, then moved into place
with ``os.replace`` (atomic on POSIX and Windows): a run killed at any instant leaves either the old file
or the new one, never a truncated one. Used by every result writer of the package.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_csv", "atomic_write_json", "atomic_write_text"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(value) for value in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON atomically: NaN and infinity become null (readable by any parser)."""
    return atomic_write_text(path, json.dumps(_finite_or_none(obj), indent=indent, allow_nan=False) + "\n")


def atomic_write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> Path:
    """Write ``rows`` (dicts) with the given column order atomically; floats keep full precision (repr)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {key: (repr(value) if isinstance(value, float) else value) for key, value in row.items()}
        )
    return atomic_write_text(path, buffer.getvalue())
