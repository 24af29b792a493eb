"""conf/ composes for every group option and the schema rejects bad values with one line naming the key."""

from __future__ import annotations

import pytest

from helpers.config import REPO, compose
from pipeline.errors import UserError

GROUPS = ("data", "model", "train", "augment", "cluster", "export", "experiment")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(group, option) for group in GROUPS for option in options(group)]
)
def test_every_group_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "npz":
        overrides.append("data.path=/any/file.npz")  # composes; the file is only opened by ingest
    config = compose(*overrides)
    if group in ("data", "model"):
        assert getattr(config, group).name == option


def test_defaults_are_the_documented_ones():
    config = compose()
    assert (config.data.name, config.model.name, config.cluster.num_workers) == ("digits", "cnn", 1)
    assert config.export.tolerance == pytest.approx(1e-4)
    assert config.export.min_agreement == pytest.approx(
        0.98
    )  # quantized exports: one flip in 50 test examples
    assert config.train.epochs > 0 and config.train.batch_size > 0


def test_seed_mlp_and_pima_shapes():
    assert compose("model=mlp").model.hidden_units == [64, 64]
    pima = compose("model=pima_mlp").model
    assert pima.hidden_units[0] == 12 and pima.activation == "relu"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("train.epochs=0", "train.epochs=0 is invalid"),
        ("train.epochs=-3", "train.epochs=-3 is invalid"),
        ("train.batch_size=0", "train.batch_size=0 is invalid"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.optimizer=lion", "one of adam, sgd, rmsprop, adagrad"),
        ("model.dropout_rate=1.5", "model.dropout_rate"),
        ("preprocess.test_fraction=0.95", "val_fraction + test_fraction < 1"),
        ("cluster.num_workers=3", "divisible by cluster.num_workers=3"),
        ("export.tolerance=0", "export.tolerance"),
        (
            "export.min_agreement=1.5",
            "export.min_agreement=1.5 is invalid: expected a fraction of test examples",
        ),
        (
            "export.min_agreement=-0.1",
            "export.min_agreement=-0.1 is invalid: expected a fraction of test examples",
        ),
        ("train.epochs=ten", "train.epochs"),
        ("train.steps_per_execution=0", "expected auto or an integer >= 1"),
        ("train.steps_per_execution=fast", "train.steps_per_execution='fast' is invalid"),
    ],
)
def test_bad_values_fail_naming_the_key(override, expected):
    with pytest.raises(UserError, match=expected.replace("+", r"\+").replace(".", r"\.")) as caught:
        compose(override)
    assert "\n" not in str(caught.value)


def test_unknown_key_and_unknown_options_fail_in_one_line():
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):
        compose("train.epoch=3")
    with pytest.raises(
        UserError,
        match="unknown model 'resnet': choose one of backbone, cnn, custom, mlp, pima_mlp",
    ):
        compose("model=resnet")
    with pytest.raises(
        UserError,
        match="unknown data 'imagenet': choose one of breast_cancer, cifar10, cifar100, csv, digits, fashion_mnist, image_folder, iris, mnist, npz, wine",
    ):
        compose("data=imagenet")


def test_params_staleness_is_detected(tmp_path, monkeypatch):
    from stages._config import check_params_fresh, compose_conf, config_differences
    from stages.compose import compose as compose_params

    params = tmp_path / "params.yaml"
    assert compose_params(params) == []
    assert compose_params(params) == []  # up to date: nothing rewritten
    text = params.read_text().replace("epochs: 30", "epochs: 31")
    params.write_text(text)
    from stages._config import load_params

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with pytest.raises(
        UserError, match="params.yaml is stale: it disagrees with conf/ at train.epochs"
    ):
        check_params_fresh(params, load_params(params))
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")  # DVC composed it with -S overrides: keep it
    assert compose_params(params) == ["train.epochs"]
    assert "epochs: 31" in params.read_text()
    check_params_fresh(params, load_params(params))
    monkeypatch.delenv("DVC_EXP_NAME")
    assert compose_params(params) == ["train.epochs"]  # outside an experiment conf/ wins
    assert config_differences(load_params(params), compose_conf([])) == []


def test_shipped_params_yaml_matches_conf():
    """The committed params.yaml is what conf/ composes to (else dvc repro would start by rewriting it)."""
    from stages._config import compose_conf, config_differences, load_params

    assert config_differences(load_params(REPO / "params.yaml"), compose_conf([])) == []


def test_a_config_file_with_a_moved_gate_key_is_one_line_naming_its_new_key():
    """An old params.yaml or conf/ with ``evaluate.min_accuracy`` (now ``gate.min_accuracy``)."""
    from omegaconf import OmegaConf

    from stages._config import compose_conf, to_settings

    old = OmegaConf.to_container(compose_conf([]))
    old["evaluate"]["min_r2"] = old["gate"].pop("min_r2")
    with pytest.raises(
        UserError, match=r"^config: evaluate.min_r2 moved to gate.min_r2: rename it"
    ):
        to_settings(OmegaConf.create(old))
