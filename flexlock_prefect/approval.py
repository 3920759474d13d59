"""Answering a paused promotion from outside it (what `flexlock-prefect approve` does).

`flexlock-prefect promote` prints the approve command as soon as the promote flow run is
created, while its checks still run. So an answer given early waits, up to
`FLEXLOCK_APPROVE_WAIT_S`, for the run to pause, instead of failing because it has not paused yet.
"""

from __future__ import annotations

import getpass
import time
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.prefect_errors import prefect_api_errors
from flexlock_prefect.settings import get_settings


def answer(
    flow_run_id: str,
    *,
    approved: bool,
    reviewer: str | None = None,
    comment: str = "",
    wait_s: float | None = None,
) -> str:
    """Resume the paused promotion `flow_run_id` with the reviewer's answer; returns the reviewer.

    A run that has not paused yet (its checks still run) is waited for, up to `wait_s` (default
    `FLEXLOCK_APPROVE_WAIT_S`); a run that ended, or was never a promotion, is an error.

    Example:
        >>> answer("0b7c…", approved=True, comment="metrics hold")  # doctest: +SKIP
        'ana'
    """
    run_id = _flow_run_id(flow_run_id)
    reviewer = reviewer or getpass.getuser()
    with prefect_api_errors(f"answer the promotion {flow_run_id}"), get_client(sync_client=True) as client:
        _wait_until_paused(client, run_id, get_settings().approve_wait_s if wait_s is None else wait_s)
        resume_flow_run(
            run_id,
            run_input={"decision": "approve" if approved else "reject", "reviewer": reviewer, "comment": comment},
        )
    return reviewer


def _flow_run_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise FlexlockError(f"{text!r} is not a flow run id: give the id `flexlock-prefect promote` printed") from None


def _wait_until_paused(client: SyncPrefectClient, run_id: UUID, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        state = _state(client, run_id)
        if state is not None and state.is_paused():
            return
        if state is not None and state.is_final():
            raise FlexlockError(f"flow run {run_id} is {state.type.value}, not paused for approval: nothing to answer")
        if time.monotonic() >= deadline:
            now = state.type.value if state else "not started"
            raise FlexlockError(
                f"flow run {run_id} is still {now} after {wait_s:g} s (FLEXLOCK_APPROVE_WAIT_S), not paused for "
                "approval: approve it once its checks have run, or see it in the Prefect UI"
            )
        time.sleep(min(get_settings().api_poll_s, max(0.0, deadline - time.monotonic())))


def _state(client: SyncPrefectClient, run_id: UUID) -> State | None:
    try:
        return client.read_flow_run(run_id).state
    except ObjectNotFound:
        raise FlexlockError(f"no flow run {run_id} on this Prefect server (PREFECT_API_URL)") from None
