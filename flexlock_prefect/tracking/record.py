"""How a run record appears in MLflow: params, tags, dataset inputs and the run.lock artifact.

Everything here is derived from the redacted run.lock, so a secret that never reached the
record cannot reach MLflow either. Values MLflow would silently truncate are never cut: a
config value longer than a param allows is logged as its digest, with a tag saying where the
full value is (the run.lock artifact).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Run
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from flexlock_prefect.capture.config import flatten, value_text
from flexlock_prefect.lock import LOCK_FILENAME, RepoState, RunLock, logical_run_key, save_dir_name
from flexlock_prefect.tracking import tags as t
from flexlock_prefect.tracking.client import log_batch

PARAM_VALUE_LIMIT = 6000
"""MLflow's limits: longer values would be cut silently, so they are never sent."""
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250
DATASET_DIGEST_LIMIT = 36
PREVIEW_FILENAME = f"{LOCK_FILENAME}.yaml"
"""A copy of run.lock the MLflow UI previews: it shows only files of extensions it knows."""
_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def experiment_name(lock: RunLock, explicit: str | None = None) -> str:
    """Explicit name, else config `mlflow.experiment`, else config `project`, else `Default`."""
    return config_experiment(lock.config, explicit)


def config_experiment(config: Mapping[str, Any], explicit: str | None = None) -> str:
    """`experiment_name` of a config: a sweep's parent run goes where its trials' runs go."""
    return explicit or _mlflow_setting(config, "experiment") or _config_text(config, "project") or "Default"


def run_name(lock: RunLock, explicit: str | None = None) -> str:
    """Explicit name, else config `mlflow.run_name`, else the save_dir's last part, then the
    config's `model_name` when it has one (`2026-01-02_run · resnet`): runs of one model from
    different save_dirs keep distinct names, and the part that tells them apart comes first,
    where MLflow's narrow Run Name column still shows it."""
    name = save_dir_name(lock.logical_run_id)
    model = _config_text(lock.config, "model_name")
    named = f"{name} · {model}" if model and model != name else name
    return explicit or _mlflow_setting(lock.config, "run_name") or named


def mlflow_enabled(lock: RunLock) -> bool:
    """False when the run's config says `mlflow.enabled: false`."""
    settings = lock.config.get("mlflow")
    return not (isinstance(settings, dict) and settings.get("enabled") is False)


def creation_tags(lock: RunLock, name: str, diag_version: str) -> dict[str, str]:
    """Tags a new run is created with: flexlock's (★), MLflow's system tags and seed tags."""
    tags = {
        t.LOGICAL_RUN_ID: lock.logical_run_id,
        t.LOGICAL_RUN_KEY: logical_run_key(lock.logical_run_id),
        t.FINGERPRINT: lock.fingerprint,
        t.LOCK_DIGEST: lock.digest,
        t.DIAG_VERSION: diag_version,
        t.MLFLOW_RUN_NAME: name,
        t.MLFLOW_SOURCE_TYPE: "JOB",
        t.MLFLOW_SOURCE_NAME: _source_name(lock),
        t.MLFLOW_NOTE: _note(lock),
    }
    code = _code_repo(lock)
    if code is not None:
        tags |= {
            t.MLFLOW_GIT_COMMIT: code.commit or "",
            t.MLFLOW_GIT_BRANCH: code.branch or "",
            t.MLFLOW_GIT_REPO_URL: code.remote or "",
        }
    tags |= {key: _config_text(lock.config, key) for key in t.SEED_TAG_KEYS if _config_text(lock.config, key)}
    return {key: value[:TAG_VALUE_LIMIT] for key, value in tags.items() if value}


def config_params(lock: RunLock) -> tuple[dict[str, str], dict[str, str]]:
    """Params from the flattened config, and tags for the values too long to be params."""
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    for key, value in flatten(lock.config).items():
        name = _INVALID_KEY_CHARS.sub("_", str(key))[:KEY_LIMIT]
        text = value_text(value)
        if len(text) > PARAM_VALUE_LIMIT:
            params[name] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            tags[f"{t.LONG_PARAM_PREFIX}{name}"[:KEY_LIMIT]] = (
                f"full value in artifact {LOCK_FILENAME}, key config.{key}"
            )
        else:
            params[name] = text
    return params, tags


def dataset_inputs(lock: RunLock) -> list[DatasetInput]:
    """One MLflow dataset per data input; the full digest goes in an input tag (a dataset
    digest holds `DATASET_DIGEST_LIMIT` characters at most)."""
    return [
        DatasetInput(
            dataset=Dataset(
                name=name,
                digest=state.digest[:DATASET_DIGEST_LIMIT],
                source_type="s3" if state.uri.startswith("s3://") else "local",
                source=json.dumps({"uri": state.uri}),
            ),
            tags=[
                InputTag(key=t.MLFLOW_DATA_CONTEXT, value="input"),
                InputTag(key=t.INPUT_DIGEST, value=f"{state.algorithm}:{state.digest}"),
            ],
        )
        for name, state in lock.data.items()
    ]


def log_record(client: MlflowClient, run: Run, lock: RunLock) -> None:
    """Params (batched), long-value tags, dataset inputs and the run.lock artifact."""
    run_id = run.info.run_id
    params, tags = config_params(lock)
    log_batch(client, run_id, params=params, tags=tags)
    if lock.data:
        try:
            client.log_inputs(run_id, datasets=dataset_inputs(lock))
        except MlflowException:
            # Concurrent relogs sharing an input race to create the same dataset row in MLflow's
            # store; the loser's retry finds the row the winner created.
            client.log_inputs(run_id, datasets=dataset_inputs(lock))
    # Straight to the run's artifact location: `client.log_text` would fetch the run again for it.
    with tempfile.TemporaryDirectory() as scratch:
        text = lock.to_yaml()
        for name in (LOCK_FILENAME, PREVIEW_FILENAME):
            Path(scratch, name).write_text(text)
        get_artifact_repository(run.info.artifact_uri).log_artifacts(scratch)


def _code_repo(lock: RunLock) -> RepoState | None:
    """The repository MLflow's source tags describe: the one named `code`, else the first."""
    return lock.repos.get("code") or next(iter(lock.repos.values()), None)


def _source_name(lock: RunLock) -> str:
    """What MLflow's Source column shows: the flow, and the commit, which MLflow shows otherwise
    only in its Version column, hidden by default (`train @ 89dc28d`, `+dirty` when dirty)."""
    flow = (lock.prefect.flow_name if lock.prefect else None) or "flexlock-prefect"
    code = _code_repo(lock)
    if code is None or not code.commit:
        return flow
    return f"{flow} @ {code.commit[:7]}{'+dirty' if code.dirty else ''}"


def _note(lock: RunLock) -> str:
    lines = [f"**flexlock run** `{lock.logical_run_id}`", "", f"- fingerprint `{lock.fingerprint}`"]
    for name, repo in lock.repos.items():
        state = f"dirty, snapshot `{repo.snapshot_ref}`" if repo.dirty else "clean"
        lines.append(f"- repository `{name}` at `{repo.commit or 'no commit'}` ({state})")
    return "\n".join(lines)


def _mlflow_setting(config: Mapping[str, Any], key: str) -> str | None:
    settings = config.get("mlflow")
    value = settings.get(key) if isinstance(settings, dict) else None
    return str(value) if value not in (None, "") else None


def _config_text(config: Mapping[str, Any], key: str) -> str | None:
    value: Any = config.get(key)
    return value_text(value) if value not in (None, "") and not isinstance(value, dict | list) else None
