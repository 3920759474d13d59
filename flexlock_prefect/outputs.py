"""The standard diag body: what a run left in its save_dir, logged to its MLflow run."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from mlflow import MlflowClient
from mlflow.entities import Metric

from flexlock_prefect import storage

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
ARTIFACT_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".html", ".pkl", ".joblib", ".json", ".txt", ".csv", ".md")
MAX_ARTIFACT_BYTES = 256 * 1024**2
METRIC_BATCH = 1000


def log_outputs(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log `metrics.json` (numbers, nested keys dotted) as metrics in batches, and the top-level
    files a person looks at (plots, models, reports up to 256 MiB) as artifacts.

    Example:
        >>> with mlflowlink("runs/a") as run:  # doctest: +SKIP
        ...     log_outputs("runs/a", run)
    """
    client = MlflowClient()
    run_id = run.info.run_id
    url = storage.canonical_url(save_dir)
    fs, root = storage.filesystem(url)
    metrics_url = storage.join(url, METRICS_FILE)
    if storage.exists(metrics_url):
        metrics = _numbers(json.loads(storage.read_bytes(metrics_url)))
        now = int(time.time() * 1000)
        items = [Metric(key, value, now, 0) for key, value in metrics.items()]
        for start in range(0, len(items), METRIC_BATCH):
            client.log_batch(run_id, metrics=items[start : start + METRIC_BATCH])
    for entry in fs.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] != "file" or not name.endswith(ARTIFACT_SUFFIXES) or entry["size"] > MAX_ARTIFACT_BYTES:
            continue
        _log_file(client, run_id, fs, entry["name"], name)


def _log_file(client: MlflowClient, run_id: str, fs: AbstractFileSystem, path: str, name: str) -> None:
    """Upload one file of the save_dir; remote files pass through a temporary local copy."""
    if isinstance(fs, LocalFileSystem):
        client.log_artifact(run_id, path)
        return
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / name
        fs.get_file(path, str(target))
        client.log_artifact(run_id, str(target))


def _numbers(data: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document, keyed by dotted path; other values are skipped."""
    if isinstance(data, dict):
        found: dict[str, float] = {}
        for key, value in data.items():
            found |= _numbers(value, f"{prefix}{key}.")
        return found
    if isinstance(data, bool) or not isinstance(data, int | float):
        return {}
    return {prefix.rstrip("."): float(data)}
