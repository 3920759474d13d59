"""★ The Prefect events flexlock-prefect emits (DESIGN.md §4): names, resources, payloads.

Automations and the diag deployment's trigger match on these exact names and fields.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from flexlock_prefect.lock import RunLock, logical_run_key

RUN_COMPLETED = "flexlock.run.completed"
RUN_FAILED = "flexlock.run.failed"
RUN_RELOGGED = "flexlock.run.relogged"
MODEL_PROMOTED = "flexlock.model.promoted"
MODEL_REJECTED = "flexlock.model.rejected"


def run_resource(lock: RunLock) -> dict[str, str]:
    return {
        "prefect.resource.id": f"flexlock.run.{logical_run_key(lock.logical_run_id)}",
        "prefect.resource.name": lock.logical_run_id,
        "flexlock.logical_run_id": lock.logical_run_id,
        "flexlock.save_dir": lock.logical_run_id,
    }


def run_payload(lock: RunLock) -> dict[str, Any]:
    return {
        "save_dir": lock.logical_run_id,
        "fingerprint": lock.fingerprint,
        "lock_digest": lock.digest,
        "status": lock.result.status if lock.result else None,
    }


def emit_run_finished(lock: RunLock) -> None:
    """Announce a finished run; call only once its run.lock with `result` is durable.

    Inside a flow run Prefect adds the flow run, flow and deployment as related resources.
    """
    completed = lock.result is not None and lock.result.status == "completed"
    emit_event(
        event=RUN_COMPLETED if completed else RUN_FAILED,
        resource=run_resource(lock),
        payload=run_payload(lock),
    )


def emit_relogged(lock: RunLock, mlflow_run_id: str, superseded_run_ids: list[str]) -> None:
    """Announce that diag logged `lock`'s save_dir as MLflow run `mlflow_run_id`."""
    emit_event(
        event=RUN_RELOGGED,
        resource=run_resource(lock),
        payload=run_payload(lock) | {"mlflow_run_id": mlflow_run_id, "superseded_run_ids": superseded_run_ids},
    )
