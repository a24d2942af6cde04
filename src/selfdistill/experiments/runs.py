"""One resume / overwrite / lock policy for the output folders of ``selfdistill train`` and ``distill``.

A run owns its folder while it runs (:class:`selfdistill.io.RunFolder`, an OS-level lock); a second run
into the same ``--out``, with or without ``--overwrite``, is refused with a one-line message naming the
folder. Once the lock is held:

- ``--overwrite`` empties the folder (``RunFolder.clear``) and the run starts fresh;
- otherwise a folder holding ``config.yaml`` (the validated config of an earlier run, the one resume
  snapshot of both commands) is resumed if no key that changes results differs
  (:func:`selfdistill.experiments.config.config_differences` with the config class's
  ``RESUME_IGNORED_KEYS``), and refused with the differing keys if one does;
- a folder that holds files but no ``config.yaml`` is refused (its files cannot be matched to this run).

Then the run writes its own ``config.yaml`` and keeps the lock until it ends. :func:`check_resumable` is
the same check without the lock, to fail before loading data; the locked claim repeats it.
"""

from __future__ import annotations

from pathlib import Path

from selfdistill.experiments.config import RunConfig, config_differences, read_yaml
from selfdistill.io import RunFolder, atomic_write_text

SNAPSHOT_NAME = "config.yaml"


class DifferentRunError(ValueError):
    """``--out`` holds a run with a different config; ``differences`` lists the keys (one per line)."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def saved_differences(out: Path, config: RunConfig) -> list[str] | None:
    """None when ``out`` holds no ``config.yaml``; else the keys that change results and differ between the
    saved config and ``config`` (empty: the run can be resumed). Raises ValueError for a snapshot that is
    not a valid config of the same command."""
    path = Path(out) / SNAPSHOT_NAME
    if not path.is_file():
        return None
    try:
        saved = type(config).from_dict(read_yaml(path), source=str(path))
    except ValueError as err:
        first = str(err).splitlines()[0]
        raise ValueError(
            f"--out {out} holds a config.yaml that is not a valid `selfdistill {type(config).KIND}` config "
            f"({first}); use another --out, or --overwrite to discard that folder's content"
        ) from None
    return config_differences(saved.to_dict(), config.to_dict(), ignore=type(config).RESUME_IGNORED_KEYS)


def check_resumable(out: Path, config: RunConfig, *, overwrite: bool) -> bool:
    """Raise ValueError when ``out`` cannot take this run (see the module docstring); returns True when it
    holds an earlier run of the same config (to be resumed). Reads only; takes no lock."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder (it is created if needed)")
    RunFolder(out).check_free()  # a run in progress there: say so first, whatever the folder holds
    if overwrite or not out.is_dir():
        return False
    return _check_content(out, config)


def _check_content(out: Path, config: RunConfig) -> bool:
    differences = saved_differences(out, config)
    if differences is None:
        entries = [p.name for p in RunFolder(out).entries()]  # without the lock's own files
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ValueError(
                f"--out {out} already holds files ({shown}) but no {SNAPSHOT_NAME}, so they cannot be "
                "matched to this run; use another --out, or --overwrite to delete them"
            )
        return False
    if differences:
        raise DifferentRunError(
            f"--out {out} holds a run with a different config, so it cannot be resumed "
            f"({'; '.join(differences)}); use another --out, or --overwrite (alias --force) to discard the "
            "old run",
            differences,
        )
    return True


def claim_run_folder(out: Path, config: RunConfig, *, overwrite: bool) -> RunFolder:
    """Lock ``out`` for this run, apply the policy of the module docstring, write ``config.yaml``; returns the
    held :class:`RunFolder` (release it when the run ends). Raises ValueError (``RunFolderBusy`` when
    another run holds the folder) and then holds nothing."""
    folder = RunFolder(out).acquire()
    try:
        if overwrite:
            folder.clear()
        else:
            _check_content(Path(out), config)
        atomic_write_text(Path(out) / SNAPSHOT_NAME, config.to_yaml())
    except BaseException:
        folder.release()
        raise
    return folder
