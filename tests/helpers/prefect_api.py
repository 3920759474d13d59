"""Reading back what flows told the Prefect API (flow runs, artifacts, events) and the deployments
tests made by name, and deleting those."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import Artifact, FlowRun, TaskRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.exceptions import ObjectNotFound

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


def deployments_named(names: Iterable[str]) -> dict[str, DeploymentResponse]:
    """Those of the deployments `flow/deployment` in `names` that exist, by name: read one by one,
    never as the server's whole list, which may hold other modules' deployments."""
    found = {}
    with get_client(sync_client=True) as client:
        for name in names:
            with suppress(ObjectNotFound):
                found[name] = client.read_deployment_by_name(name)
    return found


def delete_deployments(names: Iterable[str]) -> None:
    """Delete these deployments and the automations they own, if they exist."""
    with get_client(sync_client=True) as client:
        for deployment in deployments_named(names).values():
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            client.delete_deployment(deployment.id)


T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.5) -> tuple[T, bool]:
    """`read()` until `done(result)` or `timeout_s` passed; returns the last result and whether it is done.

    The API makes what flows did readable a moment later (events, task runs, triggered flow
    runs), so tests wait for a condition on what it answers, never for a fixed time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = read()
        if done(result):
            return result, True
        if time.monotonic() >= deadline:
            return result, False
        time.sleep(interval_s)


def wait_for_events(
    name: str, resource_id: str, count: int = 1, timeout_s: float = 45, **match: Any
) -> list[ReceivedEvent]:
    """Poll until `count` events named `name` about `resource_id` are readable (the API persists
    events in batches, a few seconds after they are emitted)."""

    def read() -> list[ReceivedEvent]:
        event_filter = EventFilter(  # a fresh filter each time: its time window ends at its creation
            event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
        )
        with get_client(sync_client=True) as client:
            found = client.read_events(filter=event_filter, limit=50).events
        return [e for e in found if all(e.payload.get(k) == v for k, v in match.items())]

    found, done = poll(read, lambda events: len(events) >= count, timeout_s)
    if not done:
        raise AssertionError(f"{len(found)} of {count} {name} events for {resource_id} after {timeout_s}s")
    return found


def wait_for_flow_runs(deployment_name: str, count: int, timeout_s: float = 120) -> list[FlowRun]:
    """The flow runs of the deployment `flow/deployment` once at least `count` of them are in a
    final state; within a test that requests `prefect_api`, only those created during the test
    (`runs_from_now_on`)."""
    started = _test_started.get()
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment_name).id

    def read() -> list[FlowRun]:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(),
            )
        return [r for r in runs if started is None or (r.created is not None and r.created >= started)]

    def final(runs: list[FlowRun]) -> bool:
        return len([r for r in runs if r.state and r.state.is_final()]) >= count

    runs, done = poll(read, final, timeout_s, interval_s=1)
    if not done:
        states = sorted(str(r.state.type.value) for r in runs if r.state)
        raise AssertionError(f"{len(runs)} runs of {deployment_name} after {timeout_s}s, in states {states}")
    return runs


def wait_for_task_runs(flow_run_id: str, count: int, timeout_s: float = 45) -> list[TaskRun]:
    """The task runs of a flow run, oldest first, once `count` of them are readable (the API
    records task runs from their events, a moment after they ran)."""

    def read() -> list[TaskRun]:
        with get_client(sync_client=True) as client:
            return client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )

    runs, done = poll(read, lambda found: len(found) >= count, timeout_s)
    if not done:
        raise AssertionError(f"{len(runs)} of {count} task runs of flow run {flow_run_id} after {timeout_s}s")
    return runs


def wait_for_flow_run(flow_run_id: str, until: Callable[[FlowRun], bool], timeout_s: float = 120) -> FlowRun:
    """The flow run once `until(run)` holds, e.g. `lambda run: run.state.is_paused()`."""
    run, done = poll(lambda: flow_run(flow_run_id), until, timeout_s, interval_s=1)
    if not done:
        raise AssertionError(f"flow run {flow_run_id} still {run.state.type.value} after {timeout_s}s")
    return run
