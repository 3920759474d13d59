"""Default diag flows: log run directories of the example main flow to MLflow.

`diag` logs one save_dir; `relog_all` relogs every save_dir under a root with the same body, in
parallel, when the diag code changed (save_dirs already logged by this code are skipped).

It logs `metrics.json` as metrics and the plots and files a person looks at as artifacts
(`flexlock_prefect.tracking.outputs.log_outputs`), logs `model.pkl` as an MLflow scikit-learn model and,
when the run's config names a `model_name`, registers it in the Model Registry, so that
`models:/<model_name>@<alias>` can serve it once promoted.

Run it by hand with `python flows/diag.py SAVE_DIR`; its deployment runs it whenever a main run
completes (`flexlock.run.completed`).
"""

from __future__ import annotations

import pickle
import sys

import mlflow
from prefect import flow
from prefect.artifacts import create_table_artifact

from flexlock_prefect import RunLock, diag_flow, relog, storage
from flexlock_prefect.events import emit_relogged
from flexlock_prefect.tracking.outputs import log_outputs

MODEL_FILE = "model.pkl"


def log_example_run(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log the outputs of `save_dir` and its model; register the model when the config names one."""
    log_outputs(save_dir, run)
    model_url = storage.join(storage.canonical_url(save_dir), MODEL_FILE)
    if not storage.exists(model_url):
        return
    import sklearn

    model = pickle.loads(storage.read_bytes(model_url))  # the run's own output, written by flows/train.py
    name = RunLock.load(save_dir).config.get("model_name")
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=name or None,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # no slow requirement inference
    )
    if name:
        print(f"registered {name} version {info.registered_model_version}")


@diag_flow(log_prints=True)
def diag(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log one save_dir of the example main flow to MLflow (see `log_example_run`)."""
    log_example_run(save_dir, run)


@flow(name="relog-all", log_prints=True)
def relog_all(root: str, force: bool = False) -> dict[str, int]:
    """Relog every save_dir under `root` with the diag body; returns how many were relogged or skipped."""
    outcomes = relog(root=root, force=force, diag=log_example_run)
    for outcome in outcomes:
        if outcome.outcome == "relogged":
            emit_relogged(RunLock.load(outcome.save_dir), outcome.run_id, outcome.superseded_run_ids)
    create_table_artifact(
        table=[{"save_dir": o.save_dir, "outcome": o.outcome, "mlflow_run_id": o.run_id or ""} for o in outcomes],
        key="relog-all",
        description=f"relog of every save_dir under {root}",
    )
    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in ("relogged", "skipped", "disabled")}
    print(f"{root}: {counts}")
    return counts


if __name__ == "__main__":
    print(diag(save_dir=sys.argv[1]))
