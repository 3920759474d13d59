"""★ The Prefect events flexlock-prefect emits (DESIGN.md §4): names, resources, payloads.

Automations and the diag deployment's trigger match on these exact names and fields.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prefect.events import emit_event

from flexlock_prefect.lock import RunLock

RUN_COMPLETED = "flexlock.run.completed"
RUN_FAILED = "flexlock.run.failed"
RUN_RELOGGED = "flexlock.run.relogged"
MODEL_PROMOTED = "flexlock.model.promoted"
MODEL_REJECTED = "flexlock.model.rejected"


def logical_run_key(logical_run_id: str) -> str:
    """16 hex of sha256(logical_run_id): names a logical run in resource ids, artifact keys and searches.

    Example:
        >>> logical_run_key("s3://bucket/runs/a")
        'de961c6972ce12f6'
    """
    return hashlib.sha256(logical_run_id.encode()).hexdigest()[:16]


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
