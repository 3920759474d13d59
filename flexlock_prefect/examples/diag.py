"""Example diag flow: log a run directory of the example main flow to MLflow.

It logs `metrics.json` as metrics and the plots and files a person looks at as artifacts
(`flexlock_prefect.tracking.outputs.log_outputs`), logs `model.pkl` as an MLflow scikit-learn
model and, when the run's config names a `model_name`, registers it in the Model Registry, so
that `models:/<model_name>@<alias>` can serve it once promoted. A relog of the same model bytes
reuses the save_dir's version instead of adding one (`tracking.registration.register_model`).

Run it by hand with `python -m flexlock_prefect.examples.diag SAVE_DIR`; its deployment runs it
whenever the example main flow completes a run (`flexlock.run.completed`).
"""

from __future__ import annotations

import pickle
import sys

import mlflow
from mlflow.models.model import ModelInfo

from flexlock_prefect import RunLock, diag_flow, storage
from flexlock_prefect.tracking.outputs import log_outputs
from flexlock_prefect.tracking.registration import register_model

MODEL_FILE = "model.pkl"


def model_requirements() -> list[str]:
    """The logged model's pinned requirements: MLflow then infers none, which is slow."""
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}"]


def log_example_run(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log the outputs of `save_dir`; log and register its model when the config names one (once
    per model content: a relog of the same model reuses its version, see `register_model`)."""
    log_outputs(save_dir, run)
    model_url = storage.join(storage.canonical_url(save_dir), MODEL_FILE)
    if not storage.exists(model_url):
        return

    def log_model() -> ModelInfo:
        model = pickle.loads(storage.read_bytes(model_url))  # the run's own output, written by examples/train.py
        return mlflow.sklearn.log_model(model, name="model", pip_requirements=model_requirements())

    name = RunLock.load(save_dir).config.get("model_name")
    if name:
        print(register_model(save_dir, run, name, MODEL_FILE, log_model))
    else:
        log_model()


@diag_flow(log_prints=True)
def diag(save_dir: str, run: mlflow.ActiveRun) -> None:
    """Log one save_dir of the example main flow to MLflow (see `log_example_run`)."""
    log_example_run(save_dir, run)


if __name__ == "__main__":
    print(diag(save_dir=sys.argv[1]))
