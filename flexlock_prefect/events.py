"""★ The Prefect events flexlock-prefect emits (DESIGN.md §4): names, resources, payloads.

Automations and the diag deployment's trigger match on these exact names and fields.
"""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger, emit_event
from prefect.events.worker import EventsWorker

from flexlock_prefect.lock import RunLock, logical_run_key

RUN_COMPLETED = "flexlock.run.completed"
RUN_FAILED = "flexlock.run.failed"
RUN_RELOGGED = "flexlock.run.relogged"
RELOG_REQUESTED = "flexlock.relog.requested"
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


def emit_relog_requested(root: str, force: bool = False) -> None:
    """Ask the relog-all deployment to relog every save_dir under `root`.

    Events are sent by a background worker; it is drained here so that a short-lived caller
    (the CLI) does not exit with the event still queued.
    """
    emit_event(
        event=RELOG_REQUESTED,
        resource={"prefect.resource.id": f"flexlock.root.{logical_run_key(root)}", "flexlock.root": root},
        payload={"root": root, "force": force},
    )
    EventsWorker.drain_all(timeout=30)


def emit_model_event(
    event: str, model: str, version: str, origin: str | None, to: str, by: str | None, comment: str
) -> None:
    """Announce a promotion's outcome (`MODEL_PROMOTED` or `MODEL_REJECTED`) about one model version."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"flexlock.model.{model}.{version}", "flexlock.model": model},
        payload={"name": model, "version": version, "from": origin, "to": to, "approved_by": by, "comment": comment},
    )


def _payload_value(field: str) -> dict[str, Any]:
    """A trigger parameter taking a payload field with its JSON type (a bool stays a bool)."""
    return {
        "__prefect_kind": "json",
        "value": {"__prefect_kind": "jinja", "template": f"{{{{ event.payload.{field} | tojson }}}}"},
    }


def diag_trigger() -> DeploymentEventTrigger:
    """★ The diag deployment's trigger: every completed main run is logged to MLflow."""
    return DeploymentEventTrigger(
        name="flexlock-diag-on-run-completed",
        expect={RUN_COMPLETED},
        match={"prefect.resource.id": "flexlock.run.*"},
        for_each={"prefect.resource.id"},
        parameters={"save_dir": "{{ event.payload.save_dir }}"},
    )


def relog_trigger() -> DeploymentEventTrigger:
    """The relog-all deployment's trigger: `flexlock.relog.requested` with payload `{root, force}`."""
    return DeploymentEventTrigger(
        name="flexlock-relog-all-on-request",
        expect={RELOG_REQUESTED},
        match={"prefect.resource.id": "flexlock.root.*"},
        for_each={"prefect.resource.id"},
        parameters={"root": "{{ event.payload.root }}", "force": _payload_value("force")},
    )
