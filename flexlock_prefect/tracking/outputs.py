"""The standard diag body: what a run left in its save_dir, logged to its MLflow run."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from flexlock_prefect import storage
from flexlock_prefect.metrics import read_metrics
from flexlock_prefect.settings import get_settings

logger = logging.getLogger(__name__)

METRIC_BATCH = 1000
"""Metrics per `log_batch` request: MLflow's limit."""
_CLIENT_ONLY = "__flexlock_logs_through_client__"
Body = TypeVar("Body", bound=Callable[..., object])


def logs_through_client(body: Body) -> Body:
    """Mark a diag body that logs only through `MlflowClient` with `run.info.run_id`.

    Its run is then not made MLflow's fluent active run, which saves the three requests that
    resuming a run through the fluent API costs; `mlflow.log_metric` would not reach it.
    """
    setattr(body, _CLIENT_ONLY, True)
    return body


def uses_fluent_run(body: Callable[..., object]) -> bool:
    """Whether a diag body needs its run to be MLflow's fluent active run (unless marked otherwise)."""
    return not getattr(body, _CLIENT_ONLY, False)


@logs_through_client
def log_outputs(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log `metrics.json` (numbers, nested keys dotted) as metrics in batches, and the top-level
    files a person looks at as artifacts: those with a suffix in `FLEXLOCK_ARTIFACT_SUFFIXES`, up
    to `FLEXLOCK_MAX_ARTIFACT_BYTES` each.

    Example:
        >>> with mlflowlink("runs/a") as run:  # doctest: +SKIP
        ...     log_outputs("runs/a", run)
    """
    client = MlflowClient()
    run_id = run.info.run_id
    url = storage.canonical_url(save_dir)
    fs, root = storage.filesystem(url)
    now = int(time.time() * 1000)
    items = [Metric(key, value, now, 0) for key, value in read_metrics(url).items()]
    for start in range(0, len(items), METRIC_BATCH):
        client.log_batch(run_id, metrics=items[start : start + METRIC_BATCH])
    settings = get_settings()
    suffixes = tuple(settings.artifact_suffixes)
    # Straight to the run's artifact location: `client.log_artifact` would fetch the run again for it.
    repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    for entry in fs.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] != "file" or not name.endswith(suffixes) or entry["size"] > settings.max_artifact_bytes:
            continue
        _log_file(repository, fs, entry["name"], name)


def _log_file(repository: ArtifactRepository, fs: AbstractFileSystem, path: str, name: str) -> None:
    """Upload one file of the save_dir; remote files pass through a temporary local copy."""
    if isinstance(fs, LocalFileSystem):
        repository.log_artifact(path)
        return
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / name
        fs.get_file(path, str(target))
        repository.log_artifact(str(target))
