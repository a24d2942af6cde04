"""Reproduce the papers' figures.

  kernel : Mobahi et al. (2020) Section 4 - Figure 2 (fit per round against sin(2 pi x)) and Figure 3
           (diagonal of B_t per round), for the paper's data and for the interior-only variant where G is
           positive definite. NumPy only, seconds.
  neural : a CPU-sized multi-round self-distillation chain on built-in data (scikit-learn digits), the
           trends of Section 5 (train accuracy on the original labels, test accuracy per round). Minutes.
  ntk    : the NTK bridge (not part of "all"): the kernel chain on the empirical NTK of the initialized
           network beside the network's own chain, per round (digits, label noise, an MLP); into
           --out/ntk_bridge. Minutes.

Everything lands in --out (default runs/reproduce, outside the tracked files) as PNG plots, CSV/JSON
numbers and a short summary printed at the end. The run owns its folder while it runs. A non-empty --out
is refused unless --overwrite (which clears it), or unless it holds a run of the same command with the same
settings: then the command resumes it (the kernel part is recomputed in seconds, the neural chain continues
after its last finished round; a finished run is written again from its checkpoints, so running the
README's first command twice works).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from selfdistill.io import RunFolder, atomic_write_json

#: the record of what a reproduce run in a folder was asked to do, and whether it finished
RUN_RECORD = "run.json"
_COMMAND = "selfdistill reproduce"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--what",
        choices=["all", "kernel", "neural", "ntk"],
        default="all",
        help="which reproduction to run (default: all = kernel and neural; ntk runs alone)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/reproduce"), help="output folder (default: runs/reproduce)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what a non-empty --out holds (an interrupted run of the same command resumes "
        "without it)",
    )
    parser.add_argument(
        "--epsilon",
        type=float,
        default=0.05,
        help="kernel: loss tolerance eps for the paper's 11 points (feasible for eps > 0.0419; default 0.05 "
        "shows improve-then-underfit)",
    )
    parser.add_argument(
        "--interior-epsilon",
        type=float,
        default=0.01,
        help="kernel: eps for the interior-only variant x = 0.1..0.9 (default 0.01)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="neural, ntk: a smaller, faster run (fewer seeds and steps) for smoke testing",
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the run computes: a folder is resumed only by a run with the same settings."""
    settings: dict[str, Any] = {"what": args.what}
    if args.what in ("all", "kernel"):
        settings.update(epsilon=args.epsilon, interior_epsilon=args.interior_epsilon)
    if args.what in ("all", "neural", "ntk"):
        settings["quick"] = bool(args.quick)
    return settings


def _record(folder: RunFolder) -> dict[str, Any] | None:
    try:
        record = json.loads((folder.path / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("command") == _COMMAND else None


def _prepare(folder: RunFolder, args: argparse.Namespace, settings: dict[str, Any]) -> bool:
    """Clear (--overwrite), accept (empty), resume (an interrupted run with the same settings) or refuse
    the folder; returns True when resuming."""
    if args.overwrite:
        folder.clear()
        return False
    if folder.is_empty():
        return False
    record = _record(folder)
    if record is None:  # not a reproduce run: refused
        folder.refuse_if_not_empty("use --overwrite to replace it, or choose another --out")
    if record.get("settings") == settings:  # the same command: resume it (a finished run: all cached)
        return True
    state = "a finished" if record.get("finished") else "an interrupted"
    raise ValueError(
        f"--out {folder.path} holds {state} reproduce run with other settings ({record.get('settings')}); "
        "use --overwrite to replace it, or choose another --out"
    )


def main(args: argparse.Namespace) -> int:
    settings = _settings(args)
    kernel_runs = None
    if args.what in ("all", "kernel"):  # validated and computed (seconds) before the folder is touched
        from selfdistill.experiments.kernel_figures import section4_runs

        kernel_runs = section4_runs(epsilon=args.epsilon, interior_epsilon=args.interior_epsilon)
    folder = RunFolder(args.out).acquire()
    try:
        resuming = _prepare(folder, args, settings)
        out = folder.path
        if resuming:
            finished = bool((_record(folder) or {}).get("finished"))
            print(
                f"{out} holds a finished run of this command: its results are written again from the "
                "finished rounds (--overwrite starts over)"
                if finished
                else f"resuming the interrupted run in {out}"
            )
        record = {"command": _COMMAND, "argv": sys.argv[1:], "settings": settings, "finished": False}
        with folder.writing(rerun="then run the same command again to resume"):
            atomic_write_json(out / RUN_RECORD, record)
            if kernel_runs is not None:
                from selfdistill.experiments.kernel_figures import write_section4

                write_section4(kernel_runs, out / "kernel")
            if args.what in ("all", "neural"):
                from selfdistill.experiments.neural_reproduce import reproduce_neural

                reproduce_neural(out / "neural", quick=args.quick)
            if args.what == "ntk":
                from selfdistill.experiments.ntk_bridge import run_ntk_bridge

                run_ntk_bridge(out / "ntk_bridge", quick=args.quick)
            atomic_write_json(out / RUN_RECORD, {**record, "finished": True})
    except BaseException:
        folder.abandon()
        raise
    folder.release()
    print(f"results written to {out}")
    return 0
