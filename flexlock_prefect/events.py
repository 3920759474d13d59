"""★ The Prefect events flexlock-prefect emits (DESIGN.md §4): names, resources, payloads.

Automations and the diag deployment's trigger match on these exact names and fields.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.events.worker import EventsWorker

from flexlock_prefect.lock import RunLock, logical_run_key
from flexlock_prefect.sweeplock import SweepLock

RUN_COMPLETED = "flexlock.run.completed"
RUN_FAILED = "flexlock.run.failed"
RUN_RELOGGED = "flexlock.run.relogged"
RELOG_REQUESTED = "flexlock.relog.requested"
MODEL_PROMOTED = "flexlock.model.promoted"
MODEL_REJECTED = "flexlock.model.rejected"
MODEL_DRIFT = "flexlock.model.drift"
"""A registry audit found aliases, lifecycle tags or approvals that disagree with the lifecycle history."""
SWEEP_COMPLETED = "flexlock.sweep.completed"
FLOW_LABEL = "flexlock.flow"
"""The main flow's name, on run events and relog requests: what a pipeline's triggers match on."""

MainFlow = Flow[..., Any] | str | None


def run_resource(lock: RunLock) -> dict[str, str]:
    """The resource of a run event; it names the main flow when the run was recorded by one."""
    resource = {
        "prefect.resource.id": f"flexlock.run.{logical_run_key(lock.logical_run_id)}",
        "prefect.resource.name": lock.logical_run_id,
        "flexlock.logical_run_id": lock.logical_run_id,
        "flexlock.save_dir": lock.logical_run_id,
    }
    if lock.prefect and lock.prefect.flow_name:
        resource[FLOW_LABEL] = lock.prefect.flow_name
    return resource


def flow_name(main: MainFlow) -> str | None:
    """The name a trigger scoped to `main` matches: a flow's name, or the name given."""
    return main.name if isinstance(main, Flow) else main


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


def emit_sweep_completed(lock: SweepLock) -> None:
    """Announce a sweep that ended with at least one completed trial (and none failed, with
    `fail_fast`). Resource `flexlock.sweep.<study key>`; payload `{root, study_key_hash, best,
    trials}`: `best` is `{trial_key_hash, save_dir, values, metric, value}` or None (no metric,
    or no trial reported it), `trials` counts them by status."""
    emit_event(
        event=SWEEP_COMPLETED,
        resource={
            "prefect.resource.id": f"flexlock.sweep.{lock.study_key_hash}",
            "prefect.resource.name": lock.root,
            "flexlock.sweep_root": lock.root,
            "flexlock.study_key_hash": lock.study_key_hash,
            FLOW_LABEL: lock.flow,
        },
        payload={
            "root": lock.root,
            "study_key_hash": lock.study_key_hash,
            "best": lock.best.model_dump(mode="json") if lock.best else None,
            "trials": {"total": len(lock.trials)} | {s: lock.count(s) for s in ("completed", "failed", "pending")},
        },
    )


def relog_resource(root: str, main: MainFlow = None) -> dict[str, str]:
    """The resource of a relog request for `root`, addressed to the pipeline of `main` if given."""
    resource = {"prefect.resource.id": f"flexlock.root.{logical_run_key(root)}", "flexlock.root": root}
    if name := flow_name(main):
        resource[FLOW_LABEL] = name
    return resource


def emit_relog_requested(root: str, force: bool = False, main: MainFlow = None) -> None:
    """Ask the relog-all deployment (of `main`'s pipeline, if given) to relog every save_dir under `root`.

    Events are sent by a background worker; it is drained here so that a short-lived caller
    (the CLI) does not exit with the event still queued.
    """
    emit_event(event=RELOG_REQUESTED, resource=relog_resource(root, main), payload={"root": root, "force": force})
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


def emit_model_drift(model: str, findings: list[dict[str, Any]]) -> None:
    """Announce what an audit of `model` found (`tracking.audit.Finding.to_dict()` each, with
    `kind`, `version`, `state`, `message`, `repaired`): what an automation hangs a notification on.

    The resource is the model, the one-model form of `emit_model_event`'s. Sent before the
    caller returns (the CLI exits right after).
    """
    emit_event(
        event=MODEL_DRIFT,
        resource={"prefect.resource.id": f"flexlock.model.{model}", "flexlock.model": model},
        payload={"model": model, "findings": findings},
    )
    EventsWorker.drain_all(timeout=30)


def relog_listeners(root: str, main: MainFlow = None) -> tuple[list[str], list[str]]:
    """Who would act on a relog request for `root` (to `main`'s pipeline, if given): the names
    of the enabled automations it fires, and the pipelines whose relog-all listen at all."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.events import Resource

    resource = Resource(root=relog_resource(root, main))
    with get_client(sync_client=True) as client:
        automations = [
            a for a in client.read_automations() if a.enabled and RELOG_REQUESTED in getattr(a.trigger, "expect", ())
        ]
    firing = [a.name for a in automations if a.trigger.match.matches(resource)]
    pipelines = sorted({str(a.trigger.match.model_dump().get(FLOW_LABEL, "any")) for a in automations})
    return firing, pipelines


def _payload_value(field: str) -> dict[str, Any]:
    """A trigger parameter taking a payload field with its JSON type (a bool stays a bool)."""
    return {
        "__prefect_kind": "json",
        "value": {"__prefect_kind": "jinja", "template": f"{{{{ event.payload.{field} | tojson }}}}"},
    }


def diag_trigger(main: MainFlow = None) -> DeploymentEventTrigger:
    """★ A diag deployment's trigger: the completed runs of `main` (a flow or its name).

    Without `main` it matches the completed runs of every main flow: right for a project with
    one pipeline, wrong beside another one, whose runs it would log too.

    Example:
        >>> diag.to_deployment(name="diag", triggers=[diag_trigger(train)])  # doctest: +SKIP
    """
    name = flow_name(main)
    return DeploymentEventTrigger(
        name=f"flexlock-diag-on-{name}-completed" if name else "flexlock-diag-on-run-completed",
        description=f"Log each completed run of {name or 'any main flow'} to MLflow.",
        expect={RUN_COMPLETED},
        match={"prefect.resource.id": "flexlock.run.*"} | ({FLOW_LABEL: name} if name else {}),
        for_each={"prefect.resource.id"},
        parameters={"save_dir": "{{ event.payload.save_dir }}"},
    )


def relog_trigger(main: MainFlow = None) -> DeploymentEventTrigger:
    """A relog-all deployment's trigger: `flexlock.relog.requested` (payload `{root, force}`)
    addressed to `main`'s pipeline; without `main`, every request."""
    name = flow_name(main)
    return DeploymentEventTrigger(
        name=f"flexlock-relog-all-{name}-on-request" if name else "flexlock-relog-all-on-request",
        description=f"Relog every save_dir under a root{f' with the diag of {name}' if name else ''}.",
        expect={RELOG_REQUESTED},
        match={"prefect.resource.id": "flexlock.root.*"} | ({FLOW_LABEL: name} if name else {}),
        for_each={"prefect.resource.id"},
        parameters={"root": "{{ event.payload.root }}", "force": _payload_value("force")},
    )
