"""One registered version per logical run and model content (DESIGN.md §6).

A relog makes a new MLflow run for the same save_dir; if it also registered the model it logs,
every relog would add a version of the same model file, and the version that was reviewed and
promoted would belong to a deprecated run. `register_model` registers a new version only when no
version of the logical run holds the same model bytes. Otherwise it reuses that version and links
its MLflow 3 LoggedModel to the new run as an output, so the run's page still shows its model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.entities.model_registry import ModelVersion
from mlflow.models.model import ModelInfo

from flexlock_prefect import storage
from flexlock_prefect.capture.data import hash_data
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.tracking.model_state import name_filter
from flexlock_prefect.tracking.tags import LOCK_DIGEST, LOGICAL_RUN_KEY, MODEL_DIGEST

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """What `register_model` did: the version of `name` that holds the model, and whether it is new."""

    name: str
    version: str
    model_digest: str
    reused: bool
    replaces: tuple[str, ...] = ()
    """On a new version: the versions of the same logical run whose model bytes differ."""

    def __str__(self) -> str:
        if self.reused:
            return f"{self.name} version {self.version} already holds this model ({self.model_digest}): reused"
        differs = f"; the model differs from version(s) {', '.join(self.replaces)}" if self.replaces else ""
        return f"registered {self.name} version {self.version}{differs}"


def register_model(
    save_dir: str, run: mlflow.ActiveRun, name: str, model_file: str, log_model: Callable[[], ModelInfo]
) -> Registration:
    """Register the model file (or directory) `model_file` of `save_dir` as a version of `name`,
    unless a version of this logical run already holds the same bytes.

    `log_model` logs the model to `run` and returns MLflow's `ModelInfo` (any flavor's
    `log_model`); it is called only when a new version is needed. A reused version keeps its
    number, aliases and history; if the run.lock changed meanwhile (the main flow ran again into
    the same save_dir and wrote the same model), its `flexlock.lock_digest` moves to the new
    record, which promotion then checks. Call it inside a diag body or `mlflowlink`, whose run
    carries the logical run's tags.

    Example:
        >>> @diag_flow  # doctest: +SKIP
        ... def diag(save_dir, run):
        ...     model = pickle.loads(storage.read_bytes(f"{save_dir}/model.pkl"))
        ...     register_model(save_dir, run, "churn", "model.pkl",
        ...                    lambda: mlflow.sklearn.log_model(model, name="model"))
    """
    client = MlflowClient()
    run_id = run.info.run_id
    tags = run.data.tags  # the relog created it with the logical run's tags: no request needed
    if LOGICAL_RUN_KEY not in tags or LOCK_DIGEST not in tags:
        raise FlexlockError(
            f"MLflow run {run_id} is not a flexlock run (no {LOGICAL_RUN_KEY} tag): "
            "call register_model inside a diag_flow body or an mlflowlink block"
        )
    state = hash_data(storage.join(storage.canonical_url(save_dir), model_file))
    identity = {
        LOGICAL_RUN_KEY: tags[LOGICAL_RUN_KEY],
        LOCK_DIGEST: tags[LOCK_DIGEST],
        MODEL_DIGEST: f"{state.algorithm}:{state.digest}",
    }
    versions = _versions_of(client, name, identity[LOGICAL_RUN_KEY])
    same = [v for v in versions if v.tags.get(MODEL_DIGEST) == identity[MODEL_DIGEST]]
    if same:
        registration = _reuse(client, min(same, key=lambda v: int(v.version)), run_id, identity)
    else:
        info = log_model()
        client.set_logged_model_tags(info.model_id, identity)
        version = mlflow.register_model(info.model_uri, name, tags=identity)
        replaced = tuple(sorted((v.version for v in versions), key=int))
        registration = Registration(name, str(version.version), identity[MODEL_DIGEST], False, replaced)
    logger.info("%s", registration)
    return registration


def _versions_of(client: MlflowClient, name: str, key: str) -> list[ModelVersion]:
    """The versions of `name` that belong to logical run `key` (none if the model is not registered)."""
    return list(client.search_model_versions(f"{name_filter(name)} AND tags.`{LOGICAL_RUN_KEY}` = '{key}'"))


def _reuse(client: MlflowClient, version: ModelVersion, run_id: str, identity: dict[str, str]) -> Registration:
    """Point the new run at the version's model, and the version at the current record."""
    model_id = getattr(version, "model_id", None) or _model_id(version.source)
    if model_id:
        client.log_outputs(run_id, [LoggedModelOutput(model_id, 0)])
    if version.tags.get(LOCK_DIGEST) != identity[LOCK_DIGEST]:
        client.set_model_version_tag(version.name, version.version, LOCK_DIGEST, identity[LOCK_DIGEST])
        if model_id:
            client.set_logged_model_tags(model_id, {LOCK_DIGEST: identity[LOCK_DIGEST]})
    return Registration(version.name, str(version.version), identity[MODEL_DIGEST], True)


def _model_id(source: str | None) -> str | None:
    """The LoggedModel id of a version registered from `models:/m-…` (MLflow 3), else None."""
    prefix = "models:/m-"
    return source.removeprefix("models:/") if source and source.startswith(prefix) else None
