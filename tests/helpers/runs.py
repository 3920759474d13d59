"""Run directories as a main flow leaves them, in a user's project or not, registered as model
versions, and the `flexlock-prefect` command as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flexlock_prefect.capture import FlowRunRef, capture_run
from flexlock_prefect.lock import logical_run_key
from tests.helpers.git_repos import make_repo, write_files


def make_save_dir(root: Path, name: str, recorded_by: str | None = None, **config) -> str:
    """A finished run directory under `root`: run.lock, metrics.json and a plot; its canonical URL.

    `recorded_by` names the main flow the record says it was captured in.
    """
    save_dir = root / name
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data.csv"
    if not data.exists():
        data.write_text("x,y\n1,2\n")
    base = {"project": "supersede-tests", "lr": 0.1, "input_data": str(data), "save_dir": str(save_dir)}
    flow_run = FlowRunRef(None, recorded_by, None) if recorded_by else None
    _, lock = capture_run(base | config, data=["input_data"], flow_run=flow_run)
    lock.save()
    (save_dir / "metrics.json").write_text(json.dumps({"acc": 0.9, "loss": {"train": 0.2}}))
    (save_dir / "plot.png").write_bytes(b"\x89PNG fake")
    return lock.logical_run_id


def cli(*args: str, columns: int = 250, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m flexlock_prefect ARGS` in this environment plus `env`, `columns` wide."""
    return subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns), **env},
    )


def make_project(path: Path) -> Path:
    """A git repo with code and a data file, as a user's project would be. The data file is
    untracked, so the repo is dirty and a run records a snapshot of it; `runs/` is ignored."""
    repo = make_repo(path, {"train.py": "print('v1')\n", ".gitignore": "runs/\n"})
    write_files(repo, {"data/points.csv": "x,y\n1,2\n"})
    return repo


def locked_run(project: Path, name: str, **config) -> str:
    """A run of `project`'s code on its data (or on `input_data=`), recorded in
    `project/runs/<name>`; its path."""
    base = {"lr": 0.1, "input_data": str(project / "data"), "save_dir": str(project / "runs" / name)} | config
    _, lock = capture_run(base, data=["input_data"], repos={"code": project})
    lock.save()
    return str(project / "runs" / name)


def register_version(model: str, save_dir: str) -> str:
    """Log `save_dir` to MLflow as its active run (`mlflowlink`, no Prefect) and register a new
    version of `model` from that run, with the version tags that name its logical run and
    run.lock (DESIGN.md §6); the version number."""
    from mlflow import MlflowClient

    from flexlock_prefect.lock import RunLock, logical_run_key
    from flexlock_prefect.tracking.supersede import mlflowlink
    from flexlock_prefect.tracking.tags import LOCK_DIGEST, LOGICAL_RUN_KEY

    client, lock = MlflowClient(), RunLock.load(save_dir)
    if not client.search_registered_models(f"name='{model}'"):
        client.create_registered_model(model)
    with mlflowlink(save_dir) as run:
        run_id = run.info.run_id
    tags = {LOGICAL_RUN_KEY: logical_run_key(lock.logical_run_id), LOCK_DIGEST: lock.digest}
    return str(client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id, tags=tags).version)


def active_runs_of(save_dir: str) -> list:
    """The MLflow runs of `save_dir`'s logical run tagged active, in every experiment of the
    configured server (one when its chain is sound, none before its first log)."""
    from mlflow import MlflowClient

    from flexlock_prefect.tracking.client import all_experiment_ids
    from flexlock_prefect.tracking.supersede import active_runs

    client = MlflowClient()
    return active_runs(client, all_experiment_ids(client), logical_run_key(save_dir))
