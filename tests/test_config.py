"""Typed configuration: files, environment, flags, and the errors for bad values."""

from __future__ import annotations

import json

import pytest

from neuavatar.config import env_overrides, from_dict, load_file, resolve_config, save_config, to_dict
from neuavatar.errors import ConfigError
from neuavatar.preprocess import PreprocessConfig
from neuavatar.presets import PRESETS, RunConfig


def test_round_trip_through_json(tmp_path):
    cfg = RunConfig(preprocess=PreprocessConfig(size=256, crop_mode="fixed"))
    save_config(cfg, tmp_path / "c.json")
    assert from_dict(RunConfig, load_file(tmp_path / "c.json")) == cfg


def test_values_are_coerced_and_checked():
    cfg = from_dict(PreprocessConfig, {"size": "256", "smooth_seconds": "0.5", "crop_mode": "fixed"})
    assert (cfg.size, cfg.smooth_seconds, cfg.crop_mode) == (256, 0.5, "fixed")
    with pytest.raises(ConfigError, match="crop_mode.*'wobble' is not one of"):
        from_dict(PreprocessConfig, {"crop_mode": "wobble"})
    with pytest.raises(ConfigError, match="size: expected an integer"):
        from_dict(PreprocessConfig, {"size": "big"})
    with pytest.raises(ConfigError, match="unknown setting.*sise"):
        from_dict(PreprocessConfig, {"sise": 3})
    with pytest.raises(ConfigError, match="size must be between"):
        from_dict(PreprocessConfig, {"size": 8})


def test_file_then_environment(tmp_path):
    path = tmp_path / "neuavatar.toml"
    path.write_text("[preprocess]\nsize = 384\nval_fraction = 0.2\n")
    env = {"NEUAVATAR_PREPROCESS_VAL_FRACTION": "0.3", "UNRELATED": "x"}
    cfg = resolve_config(RunConfig, base=PRESETS["cpu-smoke"], file=path, env_prefix="NEUAVATAR_", environ=env)
    assert cfg.preprocess.size == 384  # the file beats the preset
    assert cfg.preprocess.val_fraction == 0.3  # the environment beats the file
    assert env_overrides(PreprocessConfig, "NEUAVATAR_PREPROCESS_", env) == {"val_fraction": "0.3"}


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[preprocess\nsize = ")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_file(broken)
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="table of settings"):
        load_file(listing)


def test_to_dict_is_json_ready():
    data = to_dict(RunConfig())
    assert json.loads(json.dumps(data)) == data
