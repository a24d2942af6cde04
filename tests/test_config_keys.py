"""Discoverable configuration: every key documented (type, default, meaning), model options from the model
registry, `selfdistill config`, the seed axes' keys old and new, commented shipped configs."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing

import pytest

from selfdistill.cli import build_parser
from selfdistill.cli import main as cli_main
from selfdistill.experiments.config import (
    DistillConfig,
    ExperimentConfig,
    config_from_dict,
    config_keys,
    describe_keys,
    distill_config_from_dict,
    model_options,
    read_yaml,
    resolve_config_path,
    shipped_config_names,
)

MINIMAL = {
    "name": "x",
    "data": {"name": "digits"},
    "model": {"name": "mlp"},
    "loss": {"name": "l2"},
    "optimizer": {"steps": 10},
}


def _all_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}" if f.name != "kwargs" else f"{prefix}<option>"
        yield key, f
        if dataclasses.is_dataclass(hint):
            yield from _all_fields(hint, f"{key}.")


@pytest.mark.parametrize(("kind", "cls"), [("train", ExperimentConfig), ("distill", DistillConfig)])
def test_every_key_is_described_with_type_default_and_meaning(kind, cls):
    text = describe_keys(kind)
    listed = {entry["key"]: entry for entry in config_keys(cls)}
    for key, f in _all_fields(cls):
        assert f.metadata.get("doc"), f"{key} has no meaning documented"
        assert key in listed and f"  {key}" in text
        assert listed[key]["type"] and listed[key]["default"]
    assert "data.seeds" in text and "older spelling of data.seeds" in text


def test_model_options_are_the_ones_build_model_accepts():
    from selfdistill.nn.models import MODEL_NAMES, build_model

    options = model_options()
    assert set(options) == set(MODEL_NAMES)
    for name in MODEL_NAMES:
        # build_model's own refusal lists what it accepts (read here, not from the code under test)
        with pytest.raises(ValueError, match="accepted") as info:
            build_model(name, 10, (3, 8, 8), not_an_option=1)
        accepted = set(re.findall(r"'(\w+)'", str(info.value).split("accepted:")[1]))
        assert {o[0] for o in options[name]["options"]} == accepted, name
        assert options[name]["doc"]
    assert ("hidden_sizes", "Sequence[int]", "(256, 256)") in options["mlp"]["options"]


def test_help_points_to_the_key_reference_and_the_command_prints_it(capsys):
    parser = build_parser()
    for command in ("train", "distill"):
        action = next(a for a in parser._subparsers._group_actions if a.dest == "command")
        assert f"selfdistill config {command}" in action.choices[command].format_help()
    assert cli_main(["config", "distill"]) == 0
    out = capsys.readouterr().out
    assert "teacher.seeds" in out and "search.scale  [float; default: 0.9]" in out and "hidden_sizes" in out
    assert cli_main(["config", "distill", "distill_digits", "--set", "seeds=5"]) == 0
    printed = read_yaml_text(capsys.readouterr().out)
    assert printed["seeds"] == 5 and printed["data"]["seeds"] == [0]


def read_yaml_text(text):
    from selfdistill.experiments.config import parse_yaml

    return parse_yaml(text)


def test_config_command_does_not_import_torch():
    code = "import sys, selfdistill.experiments.show_config, selfdistill.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_seed_axes_old_and_new_keys():
    assert config_from_dict({**MINIMAL, "data": {"name": "digits", "seed": 3}}).data.seeds == [3]
    assert config_from_dict({**MINIMAL, "data": {"name": "digits", "seeds": 3}}).data.seeds == [0, 1, 2]
    assert config_from_dict(MINIMAL).data.seeds == [0]
    with pytest.raises(ValueError, match="give data.seeds .* or the older data.seed .*, not both"):
        config_from_dict({**MINIMAL, "data": {"name": "digits", "seed": 0, "seeds": [1]}})
    with pytest.raises(ValueError, match="data.seeds must be a non-empty list of distinct"):
        config_from_dict({**MINIMAL, "data": {"name": "digits", "seeds": [1, 1]}})
    base = read_yaml(resolve_config_path("distill_digits"))
    old = {**base, "teacher": {**{k: v for k, v in base["teacher"].items() if k != "seeds"}, "seed": 2}}
    config = distill_config_from_dict(old)
    assert config.teacher.seed_list == [2] and "seed" not in config.to_dict()["teacher"]
    two = {
        **base,
        "data": {**base["data"], "seeds": [0, 1]},
        "teacher": {**base["teacher"], "checkpoint": "t.pt"},
    }
    with pytest.raises(ValueError, match="teacher.checkpoint is one teacher, but data.seeds x teacher.seeds"):
        distill_config_from_dict(two)


def test_every_shipped_config_is_commented_and_points_to_the_reference():
    for name in shipped_config_names():
        text = resolve_config_path(name).read_text()
        kind = "distill" if name.startswith("distill") else "train"
        assert f"selfdistill config {kind}" in text, name
        keys = [line for line in text.splitlines() if re.match(r"^\s*\w+:\s*\S", line)]
        commented = [line for line in keys if "#" in line]
        assert len(commented) >= 0.6 * len(keys), f"{name}: {len(commented)} of {len(keys)} keys commented"
