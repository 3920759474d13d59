"""Registered models with versions, as the registry's tests start from them."""

from __future__ import annotations

import uuid

from mlflow import MlflowClient


def registered_model(prefix: str, versions: int = 3) -> str:
    """A new registered model `<prefix>-<8 hex>` with `versions` versions, all new, each from an
    MLflow run of its own (in an experiment named after the model); its name."""
    client = MlflowClient()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(name)
    for _ in range(versions):
        run = client.create_run(experiment)
        client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return name
