"""Pure capture of a run's inputs, one module per facet, collected by `capture_run`.

Nothing here knows Prefect or MLflow: `main.py` calls the facets as Prefect tasks, the CLI
and tests call `capture_run` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flexlock_prefect.capture.config import ConfigSource, load_config, recordable
from flexlock_prefect.capture.data import ProgressFactory, capture_data
from flexlock_prefect.capture.env import capture_env
from flexlock_prefect.capture.git import capture_repos
from flexlock_prefect.capture.lineage import find_lineage
from flexlock_prefect.exceptions import ConfigError
from flexlock_prefect.lock import PrefectState, RunLock
from flexlock_prefect.settings import FlexlockSettings, get_settings


def data_inputs(config: DictConfig, keys: Sequence[str]) -> dict[str, str]:
    """Config key → the path or URL it holds, for the keys that name data inputs."""
    inputs = {}
    for key in keys:
        value = OmegaConf.select(config, key, default=None)
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ConfigError(
                f"data input `{key}` must be a config key holding a path or s3:// URL, found {value!r}: "
                f"add `{key}: path/to/data` to the config or fix the name in `data=[...]`"
            )
        inputs[key] = os.fspath(value)
    return inputs


def capture_run(
    config: ConfigSource,
    *,
    overrides: Sequence[str] = (),
    partial: Mapping[str, Any] | None = None,
    data: Sequence[str] = (),
    repos: Mapping[str, str | os.PathLike[str]] | None = None,
    prefect: PrefectState | None = None,
    settings: FlexlockSettings | None = None,
    progress: ProgressFactory | None = None,
) -> tuple[DictConfig, RunLock]:
    """Resolve the config and capture code, data and environment into a new (unsaved) RunLock.

    Returns the resolved config, with secrets intact for the compute, and the record, with
    secrets redacted.

    Example:
        >>> cfg, lock = capture_run("conf.yaml", overrides=["lr=0.1"], data=["input_data"],
        ...                         repos={"code": "."})  # doctest: +SKIP
        >>> lock.save()  # doctest: +SKIP
    """
    settings = settings or get_settings()
    resolved = load_config(config, overrides, partial)
    repo_states = capture_repos(repos or {}, optional=settings.git_optional)
    data_states = capture_data(data_inputs(resolved, data), settings=settings, progress=progress)
    lock = RunLock.create(
        save_dir=str(resolved.save_dir),
        config=recordable(resolved),
        repos=repo_states,
        data=data_states,
        env=capture_env({name: state.path for name, state in repo_states.items()}),
        prefect=prefect,
        lineage=find_lineage(data_states),
    )
    return resolved, lock
