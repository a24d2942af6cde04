"""Experiment configs: schema validation with clear errors, overrides, shipped configs."""

from __future__ import annotations

import pytest
import yaml

from selfdistill.experiments.config import (
    apply_overrides,
    config_differences,
    config_from_dict,
    data_names,
    distill_config_from_dict,
    load_config,
    load_distill_config,
    loss_names,
    model_names,
    read_yaml,
    resolve_config_path,
    shipped_config_names,
)

MINIMAL = {
    "name": "x",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden_sizes": [16]},
    "loss": {"name": "l2"},
    "optimizer": {"steps": 10},
}

PAPER_CONFIGS = {
    "cifar10_resnet50_l2",
    "cifar100_resnet50_l2",
    "cifar100_vgg16_l2",
    "cifar10_resnet50_ce",
    "cifar10_resnet50_hard",
    "cifar10_resnet50_early_stopping",
}
CPU_CONFIGS = {
    "digits_mlp_l2",
    "digits_mlp_hard",
    "digits_mlp_early_stopping",
    "digits_mlp_ptloss",
    "mnist1d_cnn_l2",
}


def _with(section, **values):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MINIMAL.items()}
    raw.setdefault(section, {})
    raw[section].update(values)
    return raw


def test_minimal_config_gets_documented_defaults():
    config = config_from_dict(MINIMAL)
    assert config.optimizer.name == "adam" and config.optimizer.lr == 1e-3
    assert config.optimizer.weight_decay_mode == "l2"
    assert config.chain.seed_list == [0] and config.chain.rounds == 10
    assert config.model.kwargs == {"hidden_sizes": [16]}
    assert config.device == "auto" and config.logging.csv and not config.early_stopping_comparison
    assert config_from_dict(config.to_dict()) == config  # canonical form round-trips


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "optimiser": {}}, r"unknown key 'optimiser'; allowed keys: name, data, model"),
        (_with("optimizer", momentun=0.9), r"optimizer: unknown key 'momentun'; allowed keys: name, lr"),
        (
            _with("optimizer", name="rmsprop"),
            r"optimizer.name: 'rmsprop' is not allowed; allowed values: adam, sgd",
        ),
        (_with("data", name="imagenet"), r"data.name: 'imagenet' is not allowed; allowed values: digits"),
        (_with("loss", name="mse"), r"loss.name: 'mse' is not allowed; allowed values: l2, soft_ce"),
        (_with("optimizer", epochs=3), r"exactly one of steps and epochs"),
        (_with("optimizer", lr="fast"), r"optimizer.lr must be float; got 'fast'"),
        (_with("optimizer", batch_size=0), r"optimizer.batch_size must be >= 1"),
        (_with("data", label_noise=1.5), r"data.label_noise must be in \[0.0, 1.0\)"),
        (_with("data", label_noise=1.0), r"data.label_noise must be in \[0.0, 1.0\)"),
        ({**MINIMAL, "teacher": {}, "chain": {}}, r"distillation config .* `selfdistill distill`"),
        (_with("chain", seeds=[1, 1]), r"chain.seeds must be a non-empty list of distinct"),
        (_with("chain", rounds=0), r"chain.rounds must be >= 1"),
        ({**MINIMAL, "device": "tpu"}, r"device: 'tpu' is not allowed; allowed values: auto, cpu, cuda"),
        ({k: v for k, v in MINIMAL.items() if k != "model"}, r"missing required key 'model'"),
        (_with("logging", csv=False), r"rounds.csv is always written"),
        ({**MINIMAL, "early_stopping_comparison": "yes"}, r"early_stopping_comparison must be true or false"),
    ],
)
def test_bad_configs_name_the_key_and_the_allowed_values(raw, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_yaml_scientific_notation_without_dot_is_a_float():
    assert config_from_dict(_with("optimizer", lr="1e-3")).optimizer.lr == pytest.approx(1e-3)


def test_overrides_are_dotted_and_yaml_parsed():
    raw = apply_overrides(
        MINIMAL,
        [
            "optimizer.steps=50",
            "chain.seeds=[0, 3]",
            "loss.xi=0.5",
            "model.hidden_sizes=[8, 8]",
            "data.subset=100",
        ],
    )
    config = config_from_dict(raw)
    assert config.optimizer.steps == 50 and config.chain.seed_list == [0, 3] and config.loss.xi == 0.5
    assert config.model.kwargs["hidden_sizes"] == [8, 8] and config.data.subset == 100
    assert MINIMAL["optimizer"] == {"steps": 10}  # the input is not modified
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        apply_overrides(MINIMAL, ["optimizer.steps"])
    with pytest.raises(ValueError, match="name is not a section"):
        apply_overrides(MINIMAL, ["name.x=1"])


def test_config_differences_ignore_what_does_not_change_results():
    a = config_from_dict(MINIMAL).to_dict()
    b = config_from_dict(
        apply_overrides(MINIMAL, ["optimizer.lr=0.01", "chain.rounds=20", "logging.progress=false"])
    )
    assert config_differences(a, b.to_dict()) == ["optimizer.lr: 0.001 in the folder, 0.01 now"]


def test_every_shipped_config_validates(tmp_path):
    names = set(shipped_config_names())
    assert PAPER_CONFIGS | CPU_CONFIGS <= names
    for name in names:
        if "teacher" in yaml.safe_load(resolve_config_path(name).read_text()):
            with pytest.raises(ValueError, match="selfdistill distill"):  # the train CLI points to distill
                load_config(name)
            assert distill_config_from_dict(read_yaml(resolve_config_path(name))).name == name
            continue
        config = load_config(name)
        assert config.name == name
        assert resolve_config_path(f"{name}.yaml") == resolve_config_path(name)
    for name in PAPER_CONFIGS:  # the paper's protocol (Section 5)
        config = load_config(name)
        assert config.optimizer.name == "adam" and config.optimizer.steps == 64000
        assert config.optimizer.batch_size == (16 if config.data.name == "cifar10" else 64)
        assert len(config.chain.seed_list) == 10 and config.chain.rounds > 10
    assert load_config("cifar10_resnet50_hard").loss.name == "hard_ce"
    assert load_config("cifar10_resnet50_early_stopping").early_stopping_comparison
    # a config file given by path, with overrides
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(str(path), ["optimizer.steps=3"]).optimizer.steps == 3


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="shipped configs: .*digits_mlp_l2"):
        resolve_config_path("no_such_config")


def test_schema_names_are_the_torch_registries():
    """One list per name kind: the config takes them from selfdistill.nn, it does not copy them."""
    from selfdistill.nn.data import DATASET_NAMES
    from selfdistill.nn.losses import LOSS_NAMES
    from selfdistill.nn.models import MODEL_NAMES

    assert data_names() is DATASET_NAMES and model_names() is MODEL_NAMES and loss_names() is LOSS_NAMES


MINIMAL_DISTILL = {
    "name": "d",
    "data": {"name": "digits"},
    "teacher": {"model": {"name": "mlp"}, "optimizer": {"steps": 10}},
    "student": {"model": {"name": "mlp", "hidden_sizes": [8]}, "optimizer": {"steps": 10}},
}


def test_train_and_distill_share_sections_and_defaults():
    """One schema: the same dataclass per shared section, the same defaults (device auto, val_fraction)."""
    train = config_from_dict(MINIMAL)
    distill = distill_config_from_dict(MINIMAL_DISTILL)
    assert type(train.data) is type(distill.data) and train.data == distill.data
    assert type(train.optimizer) is type(distill.teacher.optimizer) is type(distill.student.optimizer)
    assert type(train.model) is type(distill.student.model)
    assert train.device == distill.device == "auto"
    assert train.data.val_fraction == distill.data.val_fraction == 0.1
    assert distill_config_from_dict(distill.to_dict()) == distill  # the snapshot round-trips
    # the shipped configs state their own values, so the common defaults changed none of them
    shipped = load_distill_config("distill_digits")
    assert shipped.data.val_fraction == 0.2 and shipped.device == "cpu"
    assert load_distill_config("distill_cifar100").device == "auto"
    for name in ("digits_mlp_l2", "digits_mlp_early_stopping", "mnist1d_cnn_l2"):
        assert load_config(name).device == "cpu" and load_config(name).data.val_fraction == 0.1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL_DISTILL, "studnet": {}}, r"unknown key 'studnet'; allowed keys: name, data, teacher"),
        ({k: v for k, v in MINIMAL_DISTILL.items() if k != "teacher"}, r"missing required key 'teacher'"),
        ({**MINIMAL_DISTILL, "teacher": {"model": {"name": "mlp"}}}, r"teacher: missing required key 'optim"),
        (
            {**MINIMAL_DISTILL, "student": {"model": {"name": "mlp"}, "optimizer": {"lr": 0.1}}},
            r"student.optimizer: give exactly one of steps and epochs",
        ),
        ({**MINIMAL_DISTILL, "data": {"name": "digits", "val_fraction": 0.0}}, r"val_fraction: .*search"),
        ({**MINIMAL_DISTILL, "search": {"scale": "big"}}, r"search.scale must be float; got 'big'"),
    ],
)
def test_distill_config_errors_name_the_key(raw, message):
    with pytest.raises(ValueError, match=message):
        distill_config_from_dict(raw)


def test_yaml_numbers_without_a_dot_are_numbers_in_both_configs(tmp_path):
    """PyYAML reads 1e6 and 1e-3 as strings; both configs read them as numbers, in every key."""
    train_text = yaml.safe_dump(MINIMAL).replace("steps: 10", "steps: 1e3") + "chain: {rounds: 2e0}\n"
    train_text = train_text.replace("name: l2", "name: kl\n  temperature: 4e0")
    (tmp_path / "t.yaml").write_text(train_text)
    train = load_config(tmp_path / "t.yaml", ["optimizer.lr=1e-2"])
    assert train.optimizer.steps == 1000 and isinstance(train.optimizer.steps, int)
    assert train.optimizer.lr == 0.01 and train.chain.rounds == 2
    assert train.loss.kwargs == {"temperature": 4.0}  # a free key (build_loss argument) too
    distill_text = yaml.safe_dump(MINIMAL_DISTILL) + "search: {scale: 1e6, n_candidates: 2e1}\n"
    (tmp_path / "d.yaml").write_text(distill_text)
    distill = load_distill_config(tmp_path / "d.yaml")
    assert distill.search.scale == 1e6 and distill.search.n_candidates == 20
    assert load_distill_config(tmp_path / "d.yaml", ["search.scale=2e-1"]).search.scale == 0.2


@pytest.mark.parametrize("loss", ["kl", "ptloss"])
@pytest.mark.parametrize("xi", [1.5, -0.5])
def test_probability_target_losses_refuse_xi_outside_0_1_and_say_why(loss, xi):
    raw = _with("loss", name=loss, xi=xi)
    with pytest.raises(ValueError, match=rf"loss.xi={xi:g} .*negative entries.*whatever the learning rate"):
        config_from_dict(raw)
    assert config_from_dict(_with("loss", name="l2", xi=xi)).loss.xi == xi  # L2 is defined for them
    assert config_from_dict(_with("loss", name="soft_ce", xi=xi)).loss.xi == xi
