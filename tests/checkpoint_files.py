"""Test helper: damage a saved checkpoint the way a bad disk does, inside a tensor's bytes."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path


def flip_byte_in_a_tensor(path: Path) -> None:
    """Invert one byte in the middle of the largest tensor record of a ``torch.save`` zip file (the file
    stays a valid zip: only the weights change)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        records = [i for i in archive.infolist() if re.search(r"/data/\d+$", i.filename)]
    record = max(records, key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    header = record.header_offset  # local file header: 30 bytes, then the name and the extra field
    name_length = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    raw[start + record.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
