"""Reading back what flows told the Prefect API: flow runs, artifacts and events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import Artifact, FlowRun, TaskRun
from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent

_test_started: ContextVar[datetime | None] = ContextVar("test_started", default=None)


@contextmanager
def runs_from_now_on() -> Iterator[None]:
    """Inside the block `wait_for_flow_runs` sees only flow runs created in it: those of one test
    (the `prefect_api` fixture), never an earlier test's runs of the same deployment."""
    token = _test_started.set(datetime.now(UTC))
    try:
        yield
    finally:
        _test_started.reset(token)


def flow_run(flow_run_id: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def artifacts(key: str) -> list[Artifact]:
    """Every version of the artifact `key`, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


def wait_for_events(
    name: str, resource_id: str, count: int = 1, timeout_s: float = 45, **match: Any
) -> list[ReceivedEvent]:
    """Poll until `count` events named `name` about `resource_id` are readable (the API persists
    events in batches, a few seconds after they are emitted)."""
    deadline = time.monotonic() + timeout_s
    found: list[ReceivedEvent] = []
    while time.monotonic() < deadline:
        event_filter = EventFilter(  # a fresh filter each time: its time window ends at its creation
            event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
        )
        with get_client(sync_client=True) as client:
            found = client.read_events(filter=event_filter, limit=50).events
        found = [e for e in found if all(e.payload.get(k) == v for k, v in match.items())]
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{len(found)} of {count} {name} events for {resource_id} after {timeout_s}s")


def wait_for_flow_runs(deployment_name: str, count: int, timeout_s: float = 120) -> list[FlowRun]:
    """The flow runs of a deployment once at least `count` of them are in a final state; within a
    test that requests `prefect_api`, only those created during the test (`runs_from_now_on`)."""
    started = _test_started.get()
    deadline = time.monotonic() + timeout_s
    runs: list[FlowRun] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
                flow_run_filter=FlowRunFilter(),
            )
        if started is not None:
            runs = [r for r in runs if r.created is not None and r.created >= started]
        if len([r for r in runs if r.state and r.state.is_final()]) >= count:
            return runs
        time.sleep(1)
    states = sorted(str(r.state.type.value) for r in runs if r.state)
    raise AssertionError(f"{len(runs)} runs of {deployment_name} after {timeout_s}s, in states {states}")


def wait_for_task_runs(flow_run_id: str, count: int, timeout_s: float = 45) -> list[TaskRun]:
    """The task runs of a flow run, oldest first, once `count` of them are readable (the API
    records task runs from their events, a moment after they ran)."""
    deadline = time.monotonic() + timeout_s
    runs: list[TaskRun] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )
        if len(runs) >= count:
            return runs
        time.sleep(0.5)
    raise AssertionError(f"{len(runs)} of {count} task runs of flow run {flow_run_id} after {timeout_s}s")
