"""One way to read settings for every stage: defaults < --config file < environment < flags, and
every field of every stage settable each way (issue: one way to read configuration)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from lawclf import config
from lawclf.config import ALL_CONFIGS, add_config_args, config_from_args

# Fields whose values are checked beyond their type: valid alternatives for the three sources.
SPECIAL = {"base_url": ["https://a.example", "https://b.example", "https://c.example"],
           "post_url": ["https://a.example/t/{id}", "https://b.example/t/{id}", "https://c.example/t/{id}"],
           "digest_url": ["https://a.example/d", "https://b.example/d", "https://c.example/d"]}


def _three_values(cls, f) -> list:
    """Three different valid values for field ``f`` (file, environment, flag), none the default."""
    if f.name in SPECIAL:
        return SPECIAL[f.name]
    tp = config._field_type(cls, f)
    if f.name in cls._choices:
        options = [c for c in cls._choices[f.name] if c != f.default]
        return (options * 3)[:3] if len(options) < 3 else options[:3]
    low, high = cls._ranges.get(f.name, (None, None))
    if tp is bool:
        return [not f.default, f.default, not f.default]
    if tp in (int, float):
        base = low if low is not None else (f.default or 0)
        values = [base + step for step in (1, 2, 3)] if tp is int else [base + step / 100 for step in (1, 2, 3)]
        if high is not None:
            values = [min(v, high) for v in values] if tp is int else [high - step / 100 for step in (1, 2, 3)]
        return values
    return [f"file-{f.name}", f"env-{f.name}", f"flag-{f.name}"]


def _cases():
    for cls in ALL_CONFIGS:
        for f in dataclasses.fields(cls):
            yield pytest.param(cls, f, id=f"{cls.__name__}.{f.name}")


def _flag(cls, f, value) -> list[str]:
    flag = "--" + f.name.replace("_", "-")
    if config._field_type(cls, f) is bool:
        return [flag if value else "--no-" + f.name.replace("_", "-")]
    return [flag, str(value)]


@pytest.mark.parametrize("cls, f", list(_cases()))
def test_every_field_is_settable_each_way_and_flags_win(tmp_path, cls, f):
    from_file, from_env, from_flag = _three_values(cls, f)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({f.name.upper(): from_file}, allow_unicode=True), encoding="utf-8")
    env = {f"{cls.env_prefix}{f.name.upper()}": str(from_env).lower() if isinstance(from_env, bool) else str(from_env)}
    parser = argparse.ArgumentParser()
    add_config_args(parser, cls)

    def build(argv, environ):
        return getattr(config_from_args(cls, parser.parse_args(argv), environ=environ), f.name)

    assert build(["--config", str(params)], {}) == from_file
    assert build(["--config", str(params)], env) == from_env  # the environment wins over the file
    assert build(["--config", str(params), *_flag(cls, f, from_flag)], env) == from_flag  # flags win over both
    assert build([], {}) == f.default


def test_every_stage_has_its_own_environment_prefix():
    prefixes = [cls.env_prefix for cls in ALL_CONFIGS]
    assert all(p.startswith("LAWCLF_") for p in prefixes) and len(set(prefixes)) == len(prefixes)
    assert config.ScreenConfig.env_prefix == "LAWCLF_SCREEN_" and config.ServeConfig.env_prefix == "LAWCLF_"
    # The server's bare prefix must not read another stage's variables as its own.
    serve_fields = {f"LAWCLF_{f.name.upper()}" for f in dataclasses.fields(config.ServeConfig)}
    assert not any(v.startswith(p) for v in serve_fields for p in prefixes if p != "LAWCLF_")


def test_serve_reads_its_config_file(tmp_path, capsys):
    """`lawclf serve --config FILE.yaml` used to ignore the file: the model dir in it is now used."""
    from lawclf.serve import cli

    params = tmp_path / "serve.yaml"
    missing = tmp_path / "model-from-the-file"
    params.write_text(f"MODEL_DIR: {missing}\n", encoding="utf-8")
    assert cli(["--config", str(params)]) == 1  # cannot start: the file's model dir does not exist
    assert str(missing) in capsys.readouterr().err


def test_a_bad_environment_value_names_the_variable(monkeypatch, capsys):
    from lawclf.cli import main

    monkeypatch.setenv("LAWCLF_SCREEN_MAX_PAGES", "many")
    assert main(["screen", "status"]) == 2
    assert "LAWCLF_SCREEN_MAX_PAGES" in capsys.readouterr().err
