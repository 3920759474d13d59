"""The run's configuration: defaults, partial config and dotlist overrides, resolved by OmegaConf.

The config is given as a dataclass (typed: OmegaConf checks every override against it), a YAML
file or a mapping. It must have a `save_dir` key, which may use the `now` resolver:
`save_dir: runs/${now:%Y%m%d-%H%M%S}`. Every `${now:...}` in one resolution sees the same instant,
so `save_dir` and, say, `run_name: ${now:%H%M%S}` agree.

OmegaConf's resolvers are process-wide, so flexlock registers its `now` only while it resolves a
config, and removes it after. A process that registered its own `now` (Hydra does) keeps it:
flexlock then resolves with that one, and warns once that its instants are not pinned.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from flexlock_prefect.capture.facet import Capture, Facet
from flexlock_prefect.exceptions import ConfigError
from flexlock_prefect.redact import Redactor

ConfigSource = type | str | os.PathLike[str] | Mapping[str, Any] | None

logger = logging.getLogger(__name__)

_resolution_instant: ContextVar[datetime | None] = ContextVar("flexlock_now", default=None)
_resolver_lock = threading.Lock()
_warned_foreign_now = False


def _now(fmt: str = "%Y-%m-%d_%H-%M-%S") -> str:
    return (_resolution_instant.get() or datetime.now()).strftime(fmt)


@contextmanager
def _now_resolver() -> Iterator[None]:
    """flexlock's `now` resolver for the block, unless the process has a `now` of its own."""
    global _warned_foreign_now
    with _resolver_lock:
        if OmegaConf.has_resolver("now"):
            if not _warned_foreign_now:
                _warned_foreign_now = True
                logger.warning(
                    "an OmegaConf `now` resolver was registered outside flexlock-prefect (Hydra's?): configs "
                    "resolve with it, so two ${now:...} in one config may see different instants"
                )
            yield
            return
        # OmegaConf 2.4 renamed the call; 2.3 (still pinned by some Hydra users) has only the old name.
        register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
        register("now", _now)
        try:
            yield
        finally:
            OmegaConf.clear_resolver("now")


def load_config(
    source: ConfigSource,
    overrides: Sequence[str] = (),
    partial: Mapping[str, Any] | None = None,
) -> DictConfig:
    """Merge defaults, a partial config and dotlist overrides, in that order, and resolve.

    The config is strict, as in Hydra: a partial config or an override may change existing keys
    (and `save_dir`) but not invent new ones, so a typo like `lr_rate=0.1` is an error rather than
    a silently unused value. `+key=value` adds a key on purpose. Returns a resolved `DictConfig`
    (no interpolation left, so values cannot drift later).

    Example:
        >>> cfg = load_config({"lr": 0.01, "save_dir": "/tmp/r"}, ["lr=0.1", "+tag=try"])
        >>> cfg.lr, cfg.tag
        (0.1, 'try')
    """
    merged = _load_source(source)
    if "save_dir" not in merged:
        with open_dict(merged):
            merged.save_dir = None
    OmegaConf.set_struct(merged, True)
    additions = [o.removeprefix("+") for o in overrides if o.startswith("+")]
    changes = [o for o in overrides if not o.startswith("+")]
    try:
        if partial:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(partial)))
        if additions:
            OmegaConf.set_struct(merged, False)
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(additions))
            OmegaConf.set_struct(merged, True)
        if changes:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(changes))
    except ConfigKeyError as exc:
        raise ConfigError(_unknown_key(exc, merged, changes)) from exc
    except (OmegaConfBaseException, yaml.YAMLError) as exc:  # a value OmegaConf's YAML parser cannot read
        problem = " ".join(str(exc).split())
        raise ConfigError(f"cannot apply config overrides {list(overrides)}: {problem}") from exc
    if not isinstance(merged, DictConfig):
        raise ConfigError("the config must be a mapping at the top level")
    token = _resolution_instant.set(datetime.now())
    try:
        with _now_resolver():
            data = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {_first_line(exc)}") from exc
    finally:
        _resolution_instant.reset(token)
    if data.get("save_dir") in (None, ""):
        raise ConfigError(
            "the config has no `save_dir`: add one, e.g. `save_dir: runs/${now:%Y%m%d-%H%M%S}`, "
            "or pass the override `save_dir=...`"
        )
    return OmegaConf.create(_plain(data))


def recordable(config: DictConfig, redactor: Redactor | None = None) -> dict[str, Any]:
    """The config as plain data for run.lock, with secret keys and values redacted."""
    data = OmegaConf.to_container(config, resolve=True)
    return (redactor or Redactor.from_settings()).redact(data)


def _collect(capture: Capture) -> None:
    request = capture.request
    template = {"save_dir": request.save_dir} if request.save_dir else {}
    capture.resolved = load_config(request.config, request.overrides, template | dict(request.partial))
    capture.sections["config"] = recordable(capture.resolved, request.redactor)


FACET = Facet("resolve-config", _collect)
"""Defaults → save_dir template → partial config → overrides, resolved; recorded redacted."""


def _load_source(source: ConfigSource) -> DictConfig:
    try:
        if source is None:
            return OmegaConf.create({})
        if isinstance(source, type) and dataclasses.is_dataclass(source):
            return OmegaConf.structured(source)
        if isinstance(source, Mapping):
            return OmegaConf.create(dict(source))
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist: give a YAML file, a dataclass or a dict")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"config file {path} must hold a mapping at the top level")
            return loaded
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot load the config {source!r}: {_first_line(exc)}") from exc
    raise ConfigError(f"unsupported config source {source!r}: give a dataclass, a YAML path or a dict")


def _plain(value: Any) -> Any:
    """Plain YAML/JSON types only: paths and enums become strings."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def _unknown_key(exc: ConfigKeyError, config: DictConfig, overrides: Sequence[str]) -> str:
    """The key an override (or the partial config) invented, with the closest existing keys."""
    key = str(exc.full_key)
    keys = flatten(OmegaConf.to_container(config, resolve=False))
    known = sorted({".".join(k.split(".")[: i + 1]) for k in keys for i in range(k.count(".") + 1)})
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
    suggestion = f" (did you mean {' or '.join(repr(k) for k in close)}?)" if close else ""
    written = next((o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0].startswith(key)), None)
    if written is None:
        where = "set by the partial config: fix the key, or add it to the defaults"
        return f"the config has no key {key!r}{suggestion}, {where}"
    return (
        f"the config has no key {key!r}{suggestion}, set by the override {written!r}: "
        f"fix the key, or add it on purpose as `+{written}=value`"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`model.depth`); lists stay values.

    Example:
        >>> flatten({"model": {"depth": 3}, "lr": 0.1})
        {'model.depth': 3, 'lr': 0.1}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{dotted}.")
        else:
            flat[dotted] = value
    return flat


def value_text(value: Any) -> str:
    """A config value as one line of text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
