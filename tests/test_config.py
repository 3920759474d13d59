"""Config capture: defaults, partial config and overrides, resolved once, with clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import DictConfig

from flexlock_prefect.capture.config import flatten, load_config, recordable
from flexlock_prefect.exceptions import ConfigError


@dataclass
class ModelConfig:
    depth: int = 2
    name: str = "mlp"


@dataclass
class TrainConfig:
    lr: float = 0.01
    model: ModelConfig = field(default_factory=ModelConfig)
    save_dir: str = "runs/${now:%Y%m%d-%H%M%S-%f}"
    log_dir: str = "${save_dir}/logs"
    run_name: str = "run-${now:%H%M%S-%f}"


def test_dataclass_config_takes_typed_dotlist_overrides() -> None:
    cfg = load_config(TrainConfig, ["lr=0.1", "model.depth=3"])
    assert isinstance(cfg, DictConfig)
    assert cfg.lr == 0.1 and isinstance(cfg.lr, float)
    assert cfg.model.depth == 3 and cfg.model.name == "mlp"


def test_yaml_file_config_is_loaded_and_overridden(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("lr: 0.5\nmodel:\n  depth: 4\nsave_dir: out\n")
    cfg = load_config(path, ["model.depth=8"])
    assert (cfg.lr, cfg.model.depth, cfg.save_dir) == (0.5, 8, "out")


def test_partial_config_is_merged_over_defaults_and_overrides_win() -> None:
    cfg = load_config(TrainConfig, ["lr=0.3"], partial={"lr": 0.2, "model": {"name": "cnn"}})
    assert (cfg.lr, cfg.model.name, cfg.model.depth) == (0.3, "cnn", 2)


def test_interpolations_are_resolved_once_and_now_is_one_instant_per_resolution() -> None:
    cfg = load_config(TrainConfig)
    assert cfg.log_dir == f"{cfg.save_dir}/logs"
    assert cfg.save_dir.startswith("runs/")
    stamp = cfg.save_dir.split("-", 1)[1]  # %H%M%S-%f of the same instant as run_name
    assert cfg.run_name == f"run-{stamp}"
    assert "${" not in str(cfg)


def test_two_resolutions_get_fresh_timestamps() -> None:
    assert load_config(TrainConfig).save_dir != load_config(TrainConfig).save_dir


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ({"lr": 1}, [], "has no `save_dir`"),
        (TrainConfig, ["lr=fast"], "lr=fast"),
        (TrainConfig, ["nonexistent=1"], "nonexistent"),
        ({"a": "${missing}", "save_dir": "x"}, [], "missing"),
        ({"a": "???", "save_dir": "x"}, [], "a"),
        ("does/not/exist.yaml", [], "does/not/exist.yaml"),
        (42, [], "unsupported config source"),
    ],
)
def test_bad_config_gives_a_config_error_naming_the_problem(source, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("{", r"\{")):
        load_config(source, overrides)


def test_unknown_keys_are_refused_unless_added_with_plus() -> None:
    with pytest.raises(ConfigError, match=r"no key 'lr_rate' \(did you mean 'lr'\?\).*`\+lr_rate=value`"):
        load_config({"lr": 0.1, "save_dir": "x"}, ["lr_rate=0.2"])
    with pytest.raises(ConfigError, match=r"no key 'model.CC' \(did you mean 'model.C'"):
        load_config({"model": {"C": 1.0}, "save_dir": "x"}, ["model.CC=0.2"])
    with pytest.raises(ConfigError, match="extra"):
        load_config({"lr": 0.1, "save_dir": "x"}, partial={"extra": 1})
    cfg = load_config({"lr": 0.1, "save_dir": "x"}, ["+model.depth=3", "+tags=[a,b]"])
    assert cfg.model.depth == 3 and list(cfg.tags) == ["a", "b"]


def test_save_dir_may_come_from_overrides_or_a_partial_config_alone() -> None:
    assert load_config({"lr": 0.1}, ["save_dir=out"]).save_dir == "out"
    assert load_config({"lr": 0.1}, partial={"save_dir": "p"}).save_dir == "p"


def test_recordable_config_is_plain_data_with_secrets_redacted() -> None:
    cfg = load_config({"db": {"password": "hunter2", "host": "h"}, "save_dir": "x"})
    assert recordable(cfg) == {"db": {"password": "<redacted>", "host": "h"}, "save_dir": "x"}
    assert cfg.db.password == "hunter2"  # the compute still gets the real value


def test_flatten_gives_dotted_keys_and_keeps_lists_as_values() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
