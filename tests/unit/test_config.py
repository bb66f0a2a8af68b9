"""Configuration in one place: values checked when built, CLI help from the field comments,
``--config`` reading the YAML papermill reads."""

from __future__ import annotations

import argparse

import pytest

from lawclf import config
from lawclf.config import ConfigError, EvalConfig, TrainConfig


@pytest.mark.parametrize("make,field", [
    (lambda: TrainConfig(recipe="magic"), "TrainConfig.recipe"),
    (lambda: TrainConfig(hard_fraction=1.5), "TrainConfig.hard_fraction"),
    (lambda: TrainConfig(batch_size=0), "TrainConfig.batch_size"),
    (lambda: TrainConfig(epochs="3"), "TrainConfig.epochs"),
    (lambda: EvalConfig(threshold_strategy="best"), "EvalConfig.threshold_strategy"),
    (lambda: EvalConfig(max_source_fpr=-0.1), "EvalConfig.max_source_fpr"),
    (lambda: config.DataConfig(lenient="yes"), "DataConfig.lenient"),
])
def test_a_bad_value_fails_when_the_config_is_built_naming_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_an_int_is_accepted_for_a_float_field():
    assert TrainConfig(learning_rate=1).learning_rate == 1.0
    assert isinstance(TrainConfig(learning_rate=1).learning_rate, float)


def test_every_config_field_has_a_help_text_from_its_comment_or_is_self_explanatory():
    docs = config.field_docs(TrainConfig)
    assert docs["recipe"].startswith("Which train rows the model sees")
    assert "hard negatives" in docs["hard_fraction"]
    assert "fpr_cap" in config.field_docs(EvalConfig)["threshold_strategy"]


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    config.add_config_args(parser, cls)
    return config.config_from_args(cls, parser.parse_args(argv))


def test_help_shows_the_field_comment():
    parser = argparse.ArgumentParser()
    config.add_config_args(parser, TrainConfig)
    text = parser.format_help()
    assert "Which train rows the model sees" in text and "--config FILE.yaml" in text


def test_config_file_then_flags(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("MODEL_NAME: tiny\nEPOCHS: 5\nRECIPE: robust\nTHRESHOLD_STRATEGY: fpr_cap\nTYPO_NAME: 1\n",
                      encoding="utf-8")
    cfg = _parse(TrainConfig, ["--config", str(params), "--epochs", "2"])
    assert (cfg.model_name, cfg.epochs, cfg.recipe) == ("tiny", 2, "robust")  # the flag wins over the file
    err = capsys.readouterr().err
    assert "TYPO_NAME is not a parameter" in err and "THRESHOLD_STRATEGY" not in err  # another stage's: ignored
    assert _parse(EvalConfig, ["--config", str(params)]).threshold_strategy == "fpr_cap"
    assert _parse(TrainConfig, []) == TrainConfig()


def test_a_bad_config_file_names_itself(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        _parse(TrainConfig, ["--config", str(bad)])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("RECIPE: nope\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TrainConfig.recipe"):
        _parse(TrainConfig, ["--config", str(wrong)])


def test_the_cli_reports_a_bad_parameter_before_any_work(capsys):
    from lawclf.cli import main

    assert main(["evaluate", "--threshold-strategy", "nope", "--run-dir", "/nonexistent"]) == 2
    assert "EvalConfig.threshold_strategy: must be one of max_f1, target_precision, fpr_cap" in capsys.readouterr().err


def test_recipe_and_strategy_names_are_the_implemented_ones():
    from lawclf.robustness import RECIPES

    assert tuple(RECIPES) == config.RECIPES
    assert config.THRESHOLD_STRATEGIES == ("max_f1", "target_precision", "fpr_cap")
