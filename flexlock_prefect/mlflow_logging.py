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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from flexlock_prefect.capture.config import flatten, value_text
from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.lock import RunLock, logical_run_key
from flexlock_prefect.redact import Redactor, strip_url_credentials

LOCK_ARTIFACT = "run.lock"
LOCK_DIGEST = "flexlock.lock_digest"  # the digest of the logged run.lock: what `verify` checks against
DIAG_VERSION = "flexlock.diag_version"
PARAM_VALUE_LIMIT = 6000
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250
BATCH_LIMIT = 100  # params or tags per log_batch request
SEED_TAG_KEYS = ("project", "env", "model_name", "data_name", "debug", "lifecycle_intent")
HEALTH_ATTEMPTS = 3
HEALTHY_FOR_S = 30.0  # a server that answered is not probed again for this long
_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_healthy_at: dict[str, float] = {}


def experiment_name(lock: RunLock, explicit: str | None = None) -> str:
    """Explicit name, else config `mlflow.experiment`, else config `project`, else `Default`."""
    return explicit or _mlflow_setting(lock, "experiment") or _config_text(lock, "project") or "Default"


def run_name(lock: RunLock, explicit: str | None = None) -> str:
    """Explicit name, else config `mlflow.run_name`, else `model_name`, else the save_dir's last part."""
    return (
        explicit
        or _mlflow_setting(lock, "run_name")
        or _config_text(lock, "model_name")
        or lock.logical_run_id.rstrip("/").rsplit("/", 1)[-1]
    )


def mlflow_enabled(lock: RunLock) -> bool:
    """False when the run's config says `mlflow.enabled: false`."""
    settings = lock.config.get("mlflow")
    return not (isinstance(settings, dict) and settings.get("enabled") is False)


def creation_tags(lock: RunLock, name: str, diag_version: str) -> dict[str, str]:
    """Tags a new run is created with: flexlock's (★), MLflow's system tags and seed tags."""
    tags = {
        "flexlock.logical_run_id": lock.logical_run_id,
        "flexlock.logical_run_key": logical_run_key(lock.logical_run_id),
        "flexlock.fingerprint": lock.fingerprint,
        LOCK_DIGEST: lock.digest,
        DIAG_VERSION: diag_version,
        "mlflow.runName": name,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": (lock.prefect.flow_name if lock.prefect else None) or "flexlock-prefect",
        "mlflow.note.content": _note(lock),
    }
    code = lock.repos.get("code") or next(iter(lock.repos.values()), None)
    if code is not None:
        tags |= {
            "mlflow.source.git.commit": code.commit or "",
            "mlflow.source.git.branch": code.branch or "",
            "mlflow.source.git.repoURL": code.remote or "",
        }
    tags |= {key: _config_text(lock, key) for key in SEED_TAG_KEYS if _config_text(lock, key)}
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
            tags[f"flexlock.long_param.{name}"[:KEY_LIMIT]] = (
                f"full value in artifact {LOCK_ARTIFACT}, key config.{key}"
            )
        else:
            params[name] = text
    return params, tags


def dataset_inputs(lock: RunLock) -> list[DatasetInput]:
    """One MLflow dataset per data input; the full digest goes in an input tag (a dataset
    digest holds 36 characters at most)."""
    return [
        DatasetInput(
            dataset=Dataset(
                name=name,
                digest=state.digest[:36],
                source_type="s3" if state.uri.startswith("s3://") else "local",
                source=json.dumps({"uri": state.uri}),
            ),
            tags=[
                InputTag(key="mlflow.data.context", value="input"),
                InputTag(key="flexlock.digest", value=f"{state.algorithm}:{state.digest}"),
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
        path = Path(scratch, LOCK_ARTIFACT)
        path.write_text(lock.to_yaml())
        get_artifact_repository(run.info.artifact_uri).log_artifact(str(path))


def log_batch(
    client: MlflowClient, run_id: str, params: dict[str, str] | None = None, tags: dict[str, str] | None = None
) -> None:
    """Params and tags in as few requests as MLflow's batch limits allow."""
    param_items = [Param(k, v) for k, v in (params or {}).items()]
    tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
    while param_items or tag_items:
        client.log_batch(run_id, params=param_items[:BATCH_LIMIT], tags=tag_items[:BATCH_LIMIT])
        param_items, tag_items = param_items[BATCH_LIMIT:], tag_items[BATCH_LIMIT:]


def check_tracking_server(uri: str) -> None:
    """Fail fast, with the URI's credentials stripped, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before it gives up; this probe tries a few times
    within seconds. Call it before the first MLflow request of an operation.
    """
    if (
        not uri.startswith(("http://", "https://"))
        or time.monotonic() - _healthy_at.get(uri, -HEALTHY_FOR_S) < HEALTHY_FOR_S
    ):
        return
    problem = ""
    for attempt in range(HEALTH_ATTEMPTS):
        try:
            if requests.get(uri.rstrip("/") + "/health", timeout=5).ok:
                _healthy_at[uri] = time.monotonic()
                return
            problem = "it answered but is not healthy"
        except requests.RequestException as exc:
            problem = type(exc).__name__
        time.sleep(0.5 * 2**attempt)
    raise TrackingError(
        f"MLflow tracking server {strip_url_credentials(uri)} is unreachable after {HEALTH_ATTEMPTS} attempts "
        f"({problem}): start it, or point MLFLOW_TRACKING_URI at a running one"
    )


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """MLflow and HTTP errors become a TrackingError whose text holds no credentials."""
    try:
        yield
    except (MlflowException, requests.RequestException) as exc:
        message = Redactor.from_settings().scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        raise TrackingError(f"MLflow at {strip_url_credentials(uri)} failed: {message}") from None


def _note(lock: RunLock) -> str:
    lines = [f"**flexlock run** `{lock.logical_run_id}`", "", f"- fingerprint `{lock.fingerprint}`"]
    for name, repo in lock.repos.items():
        state = f"dirty, snapshot `{repo.snapshot_ref}`" if repo.dirty else "clean"
        lines.append(f"- code `{name}`: `{repo.commit or 'no commit'}` ({state})")
    return "\n".join(lines)


def _mlflow_setting(lock: RunLock, key: str) -> str | None:
    settings = lock.config.get("mlflow")
    value = settings.get(key) if isinstance(settings, dict) else None
    return str(value) if value not in (None, "") else None


def _config_text(lock: RunLock, key: str) -> str | None:
    value: Any = lock.config.get(key)
    return value_text(value) if value not in (None, "") and not isinstance(value, dict | list) else None
