"""Checkpoints that are written atomically, verified when read, and matched to the run that wrote them.

Writing: ``torch.save`` into memory, then :func:`selfdistill.io.atomic_write_bytes` (temporary file +
``os.replace``), so a run killed at any instant leaves the old file or the new one, never a truncated one.

Verifying (:func:`save_verified_checkpoint` / :func:`read_verified_checkpoint`): at save time the payload
records

- ``weights_sha256``: the sha256 of the weights (every tensor of the state dict, keys in sorted order, each
  hashed with its name, dtype and shape, then its raw bytes), see :func:`state_dict_sha256`;
- ``fingerprint``: the sha256 of the run's settings that change results (``settings``, kept beside it so a
  mismatch can say which keys differ; for the experiments layer: the config minus
  ``RESUME_IGNORED_KEYS``, see :func:`selfdistill.experiments.config.result_settings`);
- ``sha256``: the sha256 of every other entry (the metric row, seeds, ``weights_sha256``, ...).

A reader gets a :class:`CheckpointRead` saying whether the file was absent, and otherwise what is wrong
with it, if anything: unreadable (damaged or not a checkpoint), unverified (no hash: an older format),
damaged (a hash does not match the content: bytes changed on disk) or foreign (written by a run with other
settings). The caller decides what to do (a chain retrains the round and says so).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfdistill.io import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    json_sha256,
    mapping_differences,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointRead",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "read_verified_checkpoint",
    "save_checkpoint",
    "save_verified_checkpoint",
    "state_dict_sha256",
]

CHECKPOINT_FORMAT = 2  # 1: seed/round matched only, no hash (read as "unverified")
_HASHES = ("sha256", "weights_sha256")


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (temporary file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`save_checkpoint` without verifying it; ``None`` if absent or
    unreadable. Prefer :func:`read_verified_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or corrupted file: recompute rather than crash
        return None


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 (hex) of a state dict: keys in sorted order, each with its dtype and shape, then the raw bytes
    of the tensor (on the CPU, contiguous). Equal weights give equal hashes on every device."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # e.g. a module's extra state
            digest.update(json.dumps([key, repr(value)]).encode())
    return digest.hexdigest()


def _meta_sha256(payload: Mapping[str, Any], weights_key: str) -> str:
    return json_sha256({k: v for k, v in payload.items() if k != weights_key and k != "sha256"})


def save_verified_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    *,
    settings: Mapping[str, Any],
    weights_key: str = "state_dict",
    **meta: Any,
) -> str:
    """Save ``state_dict`` (under ``weights_key``) with ``meta`` (JSON-able values), the run's
    ``settings`` and their fingerprint, and the hashes of the module docstring; returns ``weights_sha256``."""
    weights = {k: v.detach().cpu() for k, v in state_dict.items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        **meta,
        "settings": dict(settings),
        "fingerprint": json_sha256(settings),
        "weights_sha256": state_dict_sha256(weights),
    }
    payload["sha256"] = _meta_sha256(payload, weights_key)
    payload[weights_key] = weights
    save_checkpoint(path, payload)
    return payload["weights_sha256"]


@dataclass(frozen=True)
class CheckpointRead:
    """What :func:`read_verified_checkpoint` found at ``path``.

    ``kind`` is ``"absent"``, ``"ok"``, ``"unreadable"``, ``"unverified"``, ``"damaged"`` or ``"foreign"``;
    ``problem`` says why in words (None for absent and ok); ``payload`` is the loaded content whenever the
    file could be read (also for unverified, damaged and foreign files: the caller decides).
    """

    path: Path
    kind: str
    problem: str | None = None
    payload: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def weights_sha256(self) -> str | None:
        return self.payload.get("weights_sha256") if self.payload is not None else None


def read_verified_checkpoint(
    path: str | Path, *, settings: Mapping[str, Any] | None = None, weights_key: str = "state_dict"
) -> CheckpointRead:
    """Read ``path`` and check its hashes and (when ``settings`` is given) its fingerprint; never raises for
    a bad file (see :class:`CheckpointRead`)."""
    path = Path(path)
    if not path.is_file():
        return CheckpointRead(path, "absent")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to unpickle means the same thing here
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return CheckpointRead(path, "unreadable", f"cannot be read (damaged, or not a checkpoint: {first})")
    if not isinstance(payload, dict) or not isinstance(payload.get(weights_key), dict):
        return CheckpointRead(
            path, "unreadable", f"holds no {weights_key!r} weights: not a selfdistill checkpoint"
        )
    if payload.get("format") != CHECKPOINT_FORMAT or any(k not in payload for k in _HASHES):
        return CheckpointRead(
            path,
            "unverified",
            "was written without a sha256 of its weights (an older format), so it cannot be verified",
            payload,
        )
    if state_dict_sha256(payload[weights_key]) != payload["weights_sha256"]:
        return CheckpointRead(
            path,
            "damaged",
            "its weights do not match the sha256 stored when it was saved (damaged on disk)",
            payload,
        )
    if _meta_sha256(payload, weights_key) != payload["sha256"]:
        return CheckpointRead(
            path,
            "damaged",
            "its metadata do not match the sha256 stored when it was saved (damaged on disk)",
            payload,
        )
    if settings is not None and payload.get("fingerprint") != json_sha256(settings):
        differences = mapping_differences(payload.get("settings") or {}, settings, where=("there", "now"))
        detail = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
        return CheckpointRead(
            path,
            "foreign",
            f"was written by a run with different settings ({detail or 'fingerprint differs'})",
            payload,
        )
    return CheckpointRead(path, "ok", None, payload)
