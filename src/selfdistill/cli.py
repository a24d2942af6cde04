"""Command-line entry point ``selfdistill``.

The CLI is thin: each sub-command lives in an ``selfdistill.experiments`` module that provides
``add_arguments(parser)`` and ``main(args) -> int``. Those modules import torch lazily (inside ``main``),
so ``selfdistill --help`` and the kernel commands work without torch installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": (
        "selfdistill.experiments.reproduce",
        "reproduce the papers' figures (kernel Section 4, CPU-sized neural chain)",
    ),
    "kernel": (
        "selfdistill.experiments.kernel_run",
        "exact kernel self-distillation on your data (CSV or NPZ)",
    ),
    "study": (
        "selfdistill.experiments.kernel_study",
        "kernel self-distillation vs tuned ridge, gradient descent, boosting, cut-off; round selection",
    ),
    "train": (
        "selfdistill.experiments.train",
        "run a neural self-distillation experiment from a YAML config",
    ),
    "distill": (
        "selfdistill.experiments.distill",
        "teacher -> student distillation with PTLoss and baselines from a YAML config",
    ),
    "config": (
        "selfdistill.experiments.show_config",
        "every key of a train or distill config (type, default, meaning), or one config resolved",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from selfdistill import __version__

    parser = argparse.ArgumentParser(
        prog="selfdistill",
        description="Self-distillation and knowledge distillation, exact where the math is exact.",
    )
    parser.add_argument("--version", action="version", version=f"selfdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        cmd = sub.add_parser(
            name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished rounds are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # user-facing errors: message, no traceback
        print(f"selfdistill {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
