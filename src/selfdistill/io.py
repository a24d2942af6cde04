"""The one persistence layer (NumPy-free, torch-free): atomic files and run folders.

- Atomic writes: every write goes to a temporary file in the destination folder, is flushed to disk, then
  moved into place with ``os.replace`` (atomic on POSIX and Windows): a run killed at any instant leaves
  either the old file or the new one, never a truncated one. Used by every result writer of the package.
- :class:`RunFolder`: a run owns its output folder while it writes (an exclusive ``filelock`` lock that
  the operating system releases when the process dies, even on SIGKILL); a second run into the same
  folder, with or without ``--overwrite``, is refused with a message naming the folder and its owner.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import io
import json
import math
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "RunFolder",
    "RunFolderBusy",
    "atomic_save_figure",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_verified_json",
    "from_jsonable",
    "flatten_mapping",
    "json_sha256",
    "mapping_differences",
    "json_text",
    "to_jsonable",
]


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


def to_jsonable(value: Any) -> Any:
    """The package's one JSON policy: plain, strict JSON that any parser reads and that round-trips.

    NaN becomes ``null``; +inf and -inf become the strings ``"inf"`` and ``"-inf"`` (read them back with
    :func:`from_jsonable`); arrays, tensors and NumPy scalars (anything with ``tolist``) become lists and
    numbers; tuples become lists; mapping keys become strings; paths become strings.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # NumPy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    return value  # json.dumps raises TypeError for anything else


def from_jsonable(value: Any) -> Any:
    """Undo :func:`to_jsonable`'s float encoding in nested lists: ``null`` -> NaN, ``"inf"`` -> inf."""
    if isinstance(value, list):
        return [from_jsonable(item) for item in value]
    if value is None:
        return math.nan
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return value


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text under the package's one policy (:func:`to_jsonable`)."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def json_sha256(obj: Any) -> str:
    """The sha256 (hex) of ``obj``'s canonical JSON (the package's policy, keys sorted, no spaces): a
    fingerprint that is equal for equal settings whatever their key order."""
    import hashlib

    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten_mapping(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_mapping(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def mapping_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    ignore: Sequence[str] = (),
    where: tuple[str, str] = ("in the folder", "now"),
) -> list[str]:
    """``key: saved <where[0]>, current <where[1]>`` for every dotted key whose value differs, sorted;
    a key in ``ignore`` (or below one: ``chain`` covers ``chain.rounds``) is skipped."""

    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in ignore)

    a, b = flatten_mapping(saved), flatten_mapping(current)
    lines = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        old, new = a.get(key, "<absent>"), b.get(key, "<absent>")
        if to_jsonable(old) != to_jsonable(new):
            lines.append(f"{key}: {old!r} {where[0]}, {new!r} {where[1]}")
    return lines


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (:func:`to_jsonable`: NaN -> null, inf -> "inf") atomically."""
    return atomic_write_text(path, json_text(obj, indent=indent) + "\n")


def atomic_write_verified_json(path: str | os.PathLike[str], content: Mapping[str, Any]) -> Path:
    """Write the mapping ``content`` plus ``"sha256"`` (:func:`json_sha256` of ``content``) atomically, for
    :func:`read_verified_json`."""
    if "sha256" in content:
        raise ValueError("content must not have a 'sha256' key: it is the key of the hash")
    return atomic_write_json(path, {**content, "sha256": json_sha256(content)})


def read_verified_json(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """Read a file written by :func:`atomic_write_verified_json`: ``(content, None)`` when its hash matches,
    ``(None, None)`` when it is absent, ``(None, why)`` when it is unreadable or damaged."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, "cannot be read (damaged, or not a JSON file)"
    if not isinstance(saved, dict) or "sha256" not in saved:
        return None, "holds no sha256 of its content (an older format), so it cannot be verified"
    content = {key: value for key, value in saved.items() if key != "sha256"}
    if json_sha256(content) != saved["sha256"]:
        return None, "its content does not match the sha256 stored when it was saved (damaged on disk)"
    return content, None


def atomic_save_figure(
    fig: Any, path: str | os.PathLike[str], *, dpi: int = 120, **savefig_kwargs: Any
) -> Path:
    """Save a matplotlib figure atomically (rendered in memory, then moved into place); returns the path."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, **savefig_kwargs)
    return atomic_write_bytes(path, buffer.getvalue())


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


# ------------------------------------------------------------------------------------------- run folders

LOCK_NAME = ".selfdistill.lock"
OWNER_NAME = ".selfdistill.owner.json"
#: left in every folder a run has owned: ``clear()`` empties only folders that carry it (or a result file)
MARKER_NAME = ".selfdistill.run"
_BOOKKEEPING = (LOCK_NAME, OWNER_NAME, MARKER_NAME)
#: files whose presence says that a folder holds selfdistill results (folders written before the marker)
RESULT_SIGNATURES = ("config.yaml", "run.json", "summary.json", "results.json", "result.json", "rounds.csv")


class RunFolderBusy(ValueError):
    """Another run holds the output folder (a ValueError: the CLI prints it as a one-line error)."""


class RunFolder:
    """Exclusive ownership of an output folder while one run writes to it.

    ``acquire()`` (or ``with RunFolder(path) as folder:``) checks that ``path`` is not a file, creates it,
    and takes an exclusive, non-blocking ``filelock.FileLock`` on ``path/.selfdistill.lock``. The lock is
    an OS-level lock: it is released when the process ends, however it ends, so a killed run never leaves
    a stale lock behind. A second process asking for the same folder gets :class:`RunFolderBusy` naming
    the folder and the owner (pid, host, command, start time) recorded in ``.selfdistill.owner.json``.

    ``clear()`` empties the folder (``--overwrite``) while the lock is held, and only a folder that is
    empty or that selfdistill wrote (it carries ``.selfdistill.run`` or a result file such as
    ``config.yaml``): a mistaken ``--out ~ --overwrite`` is refused, never executed. ``is_empty()`` ignores
    the lock's bookkeeping files. ``option`` is the command-line name of the folder used in messages.
    """

    def __init__(self, path: str | os.PathLike[str], *, option: str = "--out") -> None:
        self.path = Path(path)
        self.option = option
        self.created = False  # acquire() created the folder (see abandon())
        self.written_by_selfdistill = False  # set by acquire(), before anything is written (see clear())
        self._lock: Any = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def _owner(self) -> str:
        try:
            info = json.loads((self.path / OWNER_NAME).read_text())
            return (
                f" (held by pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: "
                f"{info.get('command')})"
            )
        except (OSError, ValueError, AttributeError):
            return ""

    def acquire(self) -> RunFolder:
        """Create the folder and take its lock; raises ValueError (RunFolderBusy when another run owns it)."""
        from filelock import FileLock, Timeout

        if self.held:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(
                f"{self.option} {self.path} is a file, not a folder; choose a folder "
                "(it is created if needed)"
            )
        existed = self.path.is_dir()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"{self.option} {self.path}: cannot create the output folder ({err.strerror or err}); "
                "choose a writable folder"
            ) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ValueError(
                f"{self.option} {self.path}: the folder is not writable; choose a writable folder"
            )
        lock = FileLock(str(self.path / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunFolderBusy(self._busy_message()) from None
        except OSError as err:
            raise ValueError(
                f"{self.option} {self.path}: cannot lock the folder ({err.strerror or err}); choose a "
                "writable local folder"
            ) from None
        self._lock = lock
        self.created = not existed
        self.written_by_selfdistill = self.is_empty() or any(
            (self.path / name).exists() for name in (MARKER_NAME, *RESULT_SIGNATURES)
        )
        if not (self.path / MARKER_NAME).exists():
            try:
                atomic_write_text(self.path / MARKER_NAME, "a selfdistill run has owned this folder\n")
            except OSError:
                pass  # the marker only lets a later --overwrite empty the folder
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) or sys.executable,
        }
        try:
            atomic_write_json(self.path / OWNER_NAME, owner)
        except OSError:
            pass  # the owner record only improves the message of a refused second run
        return self

    def _busy_message(self) -> str:
        return (
            f"{self.option} {self.path} is in use by another selfdistill run{self._owner()}; wait for it "
            f"to finish or choose another {self.option} (--overwrite does not take over a running run)"
        )

    def check_free(self) -> None:
        """Raise :class:`RunFolderBusy` when another run holds the folder now, without taking it (the lock is
        tried and dropped at once; nothing but the lock file is written). A missing folder is free."""
        from filelock import FileLock, Timeout

        if self.held or not self.path.is_dir():
            return
        lock = FileLock(str(self.path / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunFolderBusy(self._busy_message()) from None
        except OSError:
            return  # an unwritable folder: acquire() says so
        lock.release()

    def release(self) -> None:
        """Give the folder up (the owner record goes with it)."""
        if self._lock is None:
            return
        try:
            (self.path / OWNER_NAME).unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def entries(self) -> list[Path]:
        """What the folder holds, without the lock's own bookkeeping files."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name not in _BOOKKEEPING)

    def is_empty(self) -> bool:
        return not self.entries()

    def clear(self) -> None:
        """Remove everything in the folder (for ``--overwrite``); only while holding the lock."""
        if not self.held:
            raise RuntimeError("RunFolder.clear() needs the folder's lock: call acquire() first")
        entries = self.entries()
        if entries and not self.written_by_selfdistill:
            names = ", ".join(entry.name for entry in entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ValueError(
                f"{self.option} {self.path} holds files that no selfdistill run wrote ({names}), so "
                f"--overwrite does not delete them; choose a new or empty {self.option}, or remove them "
                "yourself"
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def refuse_if_not_empty(self, fix: str) -> None:
        """One-line ValueError when the folder holds anything but the lock's bookkeeping; ``fix`` ends the
        message (e.g. "use --overwrite to replace it, or another --out")."""
        entries = self.entries()
        if entries:
            names = ", ".join(entry.name for entry in entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ValueError(f"{self.option} {self.path} is not empty (it holds {names}); {fix}")

    def abandon(self) -> None:
        """Release after a failed run; when this run created the folder and wrote nothing into it, remove it
        (with the lock's bookkeeping), so that a run that fails leaves no trace."""
        if not self.held:
            return
        remove = self.created and self.is_empty()
        try:
            if remove:  # unlink while holding the lock; the OS frees the lock itself on release
                for name in (OWNER_NAME, MARKER_NAME, LOCK_NAME):
                    (self.path / name).unlink(missing_ok=True)
        finally:
            self.release()
        if remove:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    @contextlib.contextmanager
    def writing(self, rerun: str = "") -> Iterator[None]:
        """Turn a full disk (ENOSPC, EDQUOT, EFBIG), a read-only file system (EROFS) or an I/O error (EIO)
        raised inside the block into a one-line ValueError naming the folder; ``rerun`` is appended (how to
        run again over the incomplete folder, e.g. "then run again with --overwrite")."""
        try:
            yield
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise
            where = f" while writing {err.filename}" if err.filename else ""
            fix = (
                f"the file system is read-only; choose another {self.option}"
                if err.errno == errno.EROFS
                else f"free space on that disk or choose another {self.option}"
            )
            raise ValueError(
                f"{self.option} {self.path}: {os.strerror(err.errno).lower()}{where}; {fix}"
                + (f", {rerun}" if rerun else "")
            ) from None


_DISK_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EFBIG,
        errno.EROFS,
        errno.EIO,
    )
    if code is not None
)
