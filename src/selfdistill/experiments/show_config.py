"""Print every key of a ``selfdistill train`` or ``selfdistill distill`` config: type, default, meaning.

selfdistill config train                    every key, with the options of each model and loss
selfdistill config distill
selfdistill config train digits_mlp_l2      that config (a shipped name or a YAML file), validated, with
                                            every default filled in (what config.yaml of its run holds)
selfdistill config distill distill_digits --set seeds=5
"""

from __future__ import annotations

import argparse

KINDS = ("train", "distill")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="which command's config")
    parser.add_argument(
        "config", nargs="?", default=None, help="optional: a YAML file or shipped config to print resolved"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="overrides applied before printing a config (repeatable)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from selfdistill.experiments.config import describe_keys, load_config, load_distill_config

    if args.config is None:
        if args.overrides:
            raise ValueError("--set needs a CONFIG to apply to; e.g. selfdistill config train digits_mlp_l2")
        print(describe_keys(args.kind))
        return 0
    load = load_config if args.kind == "train" else load_distill_config
    print(load(args.config, args.overrides).to_yaml(), end="")
    return 0
