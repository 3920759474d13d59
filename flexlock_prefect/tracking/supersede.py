"""★ Logical-run supersession on MLflow: one active run per save_dir, and a failed relog never
demotes the good one (DESIGN.md §5).

One relog of a save_dir:

1. Under the logical run's lock (when the caller passes one), read the runs of the logical id.
2. Create the new run with the record's tags but **no** `flexlock.status`: while it is being
   logged, nobody mistakes it for the current view.
3. Log the record (params, datasets, run.lock), then run the caller's body.
4. If the body raises, the run ends FAILED and never becomes active; the previous run stays
   active. A killed process leaves its run RUNNING and untagged until `reconcile` ends it FAILED.
5. If the body succeeds, the run ends FINISHED, is tagged `active` and names the run it
   supersedes (the commit point), and only then is the previous run tagged `deprecated` and
   linked forward. A crash between the two steps leaves two active runs, never none; a crash
   before the tag leaves a FINISHED run without status, which `reconcile` ends FAILED.
6. Settle: the chain of the logical id is checked and, if a crash or an unserialised writer
   left it inconsistent, rebuilt: finished runs in end-time order, the newest active.

This module knows MLflow, not Prefect: the lock is a callable the caller passes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus, ViewType

from flexlock_prefect.lock import RunLock, logical_run_key
from flexlock_prefect.tracking.client import (
    all_experiment_ids,
    bounded_retries,
    connect,
    experiment_id,
    log_batch,
    quiet_run_end,
)
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.record import creation_tags, experiment_name, log_record, run_name
from flexlock_prefect.tracking.tags import (
    ACTIVE,
    CHAIN_TAGS,
    DEPRECATED,
    LOGICAL_RUN_KEY,
    MLFLOW_NOTE,
    STATUS,
    SUPERSEDED_BY,
    SUPERSEDES,
    is_user_tag,
)

Record = TypeVar("Record")


@dataclass
class Relog(Generic[Record]):
    """One relog in progress of a record (a run.lock, a sweep.lock); after a clean exit
    `run_id` is the active run of the logical id."""

    lock: Record
    run_id: str
    run: mlflow.ActiveRun | None = None
    superseded_run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunView:
    """How a record appears as a new run of its logical run: all that supersession needs of it.

    `log` logs the record into the new run before the caller's body runs; `committed`, when
    given, runs right after the new run became active, still under the logical run's lock
    (a sweep's parent adopts its trials' runs there)."""

    logical_run_id: str
    experiment: str
    name: str
    tags: dict[str, str]
    log: Callable[[MlflowClient, Run], None]
    committed: Callable[[MlflowClient, list[str], str], None] | None = None


@dataclass(frozen=True)
class Repair:
    """One change reconcile made: which run of which logical run, and what."""

    logical_run_key: str
    run_id: str
    change: str


@contextmanager
def linked_run(
    save_dir: str | RunLock,
    experiment: str | None = None,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    *,
    diag_version: str = "",
    serialize: Serializer | None = None,
    fluent: bool = True,
) -> Iterator[Relog[RunLock]]:
    """Relog `save_dir` (or its loaded lock) as a new MLflow run that supersedes the active one
    on success.

    With `fluent`, the run is MLflow's active run inside the block (`mlflow.log_metric` works);
    a body that logs through `MlflowClient` with the run id can pass `fluent=False` and save the
    three requests that resuming a run through the fluent API costs.
    """
    lock = save_dir if isinstance(save_dir, RunLock) else RunLock.load(save_dir)
    resolved_name = run_name(lock, name)
    view = RunView(
        lock.logical_run_id,
        experiment_name(lock, experiment),
        resolved_name,
        creation_tags(lock, resolved_name, diag_version) | (tags or {}),
        lambda client, run: log_record(client, run, lock),
    )
    with superseding_run(lock, view, serialize=serialize, fluent=fluent) as relog:
        yield relog


@contextmanager
def superseding_run(
    record: Record, view: RunView, *, serialize: Serializer | None = None, fluent: bool = True
) -> Iterator[Relog[Record]]:
    """The steps of the module docstring for any record: a new run of `view`'s logical id that
    supersedes the active one when the block succeeds (see `linked_run`)."""
    tracking = connect()
    client = tracking.client
    key = logical_run_key(view.logical_run_id)
    with bounded_retries(), (serialize or unserialized)(key) as serialized:  # the body's requests too
        with tracking.errors():
            experiment = experiment_id(tracking, view.experiment)
            everywhere = all_experiment_ids(client)  # one active run per logical run on the whole server
            previous = active_runs(client, everywhere, key)
            inherited = {k: v for k, v in (previous[0].data.tags if previous else {}).items() if is_user_tag(k)}
            run = client.create_run(experiment, run_name=view.name, tags=inherited | view.tags)
        relog = Relog(record, run.info.run_id)
        try:
            with tracking.errors():
                view.log(client, run)
                if fluent:
                    relog.run = mlflow.start_run(run_id=relog.run_id, nested=mlflow.active_run() is not None)
                else:
                    relog.run = mlflow.ActiveRun(run)
            yield relog
        except BaseException:
            _end_failed(client, relog.run_id)
            raise
        with tracking.errors(), quiet_run_end():
            if fluent:
                mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
            else:
                client.set_terminated(relog.run_id, RunStatus.to_string(RunStatus.FINISHED))
        with tracking.errors():
            relog.superseded_run_ids = _promote(client, run, previous)
            if not serialized:  # an unserialised writer may have raced us: check the chain
                repair_chain(client, runs_of(client, everywhere, key), stale_after_s=None)
            if view.committed is not None:
                view.committed(client, everywhere, relog.run_id)


@contextmanager
def mlflowlink(
    save_dir: str,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    *,
    serialize: Serializer | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Log `save_dir` to MLflow as a new run that supersedes the active one when the block succeeds.

    Inside the block the run is MLflow's active run, so `mlflow.log_metric` and friends log to it.
    `flexlock_prefect.mlflowlink` is this with the Prefect lock of the logical run: relogs of the
    same save_dir then wait for each other when a Prefect API is configured.

    Example (the tracking store is MLflow's, e.g. `MLFLOW_TRACKING_URI=sqlite:///mlflow.db`):
        >>> import tempfile, mlflow
        >>> from flexlock_prefect.capture import capture_run
        >>> root = tempfile.mkdtemp()
        >>> _, lock = capture_run({"lr": 0.1, "save_dir": f"{root}/run"})
        >>> _ = lock.save()
        >>> with mlflowlink(f"{root}/run", experiment="proj") as run:
        ...     mlflow.log_metric("acc", 0.9)
        >>> logged = mlflow.get_run(run.info.run_id)
        >>> logged.data.tags["flexlock.status"], logged.data.metrics["acc"], logged.data.params["lr"]
        ('active', 0.9, '0.1')
    """
    with linked_run(save_dir, experiment, run_name, tags, serialize=serialize) as relog:
        yield relog.run


def current_active(save_dir: str | RunLock) -> Run | None:
    """The active run of `save_dir`'s logical id on the whole server, or None (two requests)."""
    lock = save_dir if isinstance(save_dir, RunLock) else RunLock.load(save_dir)
    return active_run_of(lock.logical_run_id)


def active_run_of(logical_run_id: str) -> Run | None:
    """The active run of a logical id (a save_dir's, a sweep root's) on the whole server, or None."""
    tracking = connect()
    with tracking.errors():
        everywhere = all_experiment_ids(tracking.client)
        active = active_runs(tracking.client, everywhere, logical_run_key(logical_run_id))
    return active[0] if active else None


def active_runs(client: MlflowClient, experiment_ids: Sequence[str], key: str) -> list[Run]:
    """The runs of one logical id tagged active (one, when the chain is sound), newest end first."""
    return client.search_runs(
        list(experiment_ids),
        filter_string=f"tags.`{LOGICAL_RUN_KEY}` = '{key}' AND tags.`{STATUS}` = '{ACTIVE}'",
        order_by=["attributes.end_time DESC"],
        max_results=100,
    )


def runs_of(client: MlflowClient, experiment_ids: Sequence[str], key: str) -> list[Run]:
    """Every run of one logical id in the given experiments, newest end first (running last)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            list(experiment_ids),
            filter_string=f"tags.`{LOGICAL_RUN_KEY}` = '{key}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            return sorted(runs, key=lambda r: (r.info.end_time or 0, r.info.start_time or 0), reverse=True)


def repair_chain(client: MlflowClient, runs: Sequence[Run], stale_after_s: float | None) -> list[Repair]:
    """Make the runs of one logical id one chain: finished runs in end-time order, the newest
    active, the others deprecated; failed runs outside it. Idempotent: a sound chain is untouched.

    A relog's commit point is tagging its finished run active (step 5), so a run without
    `flexlock.status` is a relog in flight or a dead one: RUNNING, or FINISHED by a relog killed
    before it tagged the run. With `stale_after_s`, such runs older than that are taken for
    dead relogs and ended FAILED (a FINISHED one keeps its end time), so the previous active run
    stays active (DESIGN.md §5, invariant 2). With None, they are left alone.
    """
    repairs: list[Repair] = []
    stale_before_ms = None if stale_after_s is None else (time.time() - stale_after_s) * 1000
    finished: list[Run] = []
    outside: list[Run] = []
    for run in runs:
        status = run.info.status
        if _died_uncommitted(run, stale_before_ms):
            with quiet_run_end():
                client.set_terminated(run.info.run_id, "FAILED", end_time=run.info.end_time)
            change = "ended FAILED: its relog died" + (" before tagging it active" if status == "FINISHED" else "")
            repairs.append(Repair(run.data.tags.get(LOGICAL_RUN_KEY, ""), run.info.run_id, change))
            status = "FAILED"
        if status == "FINISHED" and STATUS in run.data.tags:
            finished.append(run)
        elif status not in ("RUNNING", "FINISHED"):
            outside.append(run)
    finished.sort(key=lambda r: (r.info.end_time or 0, r.info.start_time or 0))
    wanted: list[tuple[Run, dict[str, str | None]]] = [(run, dict.fromkeys(CHAIN_TAGS)) for run in outside]
    for index, run in enumerate(finished):
        newest = index == len(finished) - 1
        wanted.append(
            (
                run,
                {
                    STATUS: ACTIVE if newest else DEPRECATED,
                    SUPERSEDES: finished[index - 1].info.run_id if index else None,
                    SUPERSEDED_BY: None if newest else finished[index + 1].info.run_id,
                },
            )
        )
    for run, tags in wanted:
        repairs += _apply(client, run, tags)
    return repairs


def _died_uncommitted(run: Run, stale_before_ms: float | None) -> bool:
    """A run its relog never committed (RUNNING, or FINISHED without `flexlock.status`), last
    touched before `stale_before_ms` (None: no run is stale)."""
    if stale_before_ms is None or not (
        run.info.status == "RUNNING" or (run.info.status == "FINISHED" and STATUS not in run.data.tags)
    ):
        return False
    return (run.info.end_time or run.info.start_time) < stale_before_ms


def _apply(client: MlflowClient, run: Run, tags: dict[str, str | None]) -> list[Repair]:
    """Give `run` these chain tags (None: no such tag), its description saying the outcome."""
    current = run.data.tags
    to_set = {k: v for k, v in tags.items() if v is not None and current.get(k) != v}
    to_delete = [k for k, v in tags.items() if v is None and k in current]
    if not to_set and not to_delete:
        return []
    log_batch(client, run.info.run_id, tags=to_set | _status_note(run, tags))
    for tag in to_delete:
        client.delete_tag(run.info.run_id, tag)
    changes = [f"{k}={v}" for k, v in to_set.items()] + [f"removed {k}" for k in to_delete]
    return [Repair(current.get(LOGICAL_RUN_KEY, ""), run.info.run_id, ", ".join(changes))]


def _promote(client: MlflowClient, run: Run, previous: list[Run]) -> list[str]:
    """The finished run becomes active first, then its predecessors are deprecated."""
    run_id = run.info.run_id
    tags = {STATUS: ACTIVE} | ({SUPERSEDES: previous[0].info.run_id} if previous else {})
    log_batch(client, run_id, tags=tags | _status_note(run, tags))
    for older in previous:
        tags = {STATUS: DEPRECATED, SUPERSEDED_BY: run_id}
        log_batch(client, older.info.run_id, tags=tags | _status_note(older, tags))
    return [older.info.run_id for older in previous]


_STATUS_LINES = {ACTIVE: "**active**: the current run of this save_dir", DEPRECATED: "**deprecated**"}


def _status_note(run: Run, tags: dict[str, str | None]) -> dict[str, str]:
    """The run's description (`mlflow.note.content`) with its first line saying the status that
    `tags` give it, as a tag to write with them: MLflow's run list shows no tag by default, the
    run page shows its description first."""
    final = {k: v for k, v in (run.data.tags | tags).items() if v is not None}
    note = run.data.tags.get(MLFLOW_NOTE, "")
    if note.startswith(tuple(f"**{status}**" for status in _STATUS_LINES)):  # the line a status wrote
        note = note.split("\n\n", 1)[1] if "\n\n" in note else ""
    status = final.get(STATUS)
    line = _STATUS_LINES.get(status or "", "")
    if status == DEPRECATED and final.get(SUPERSEDED_BY):
        line += f": superseded by run `{final[SUPERSEDED_BY]}`"
    return {MLFLOW_NOTE: "\n\n".join(part for part in (line, note) if part)}


def _end_failed(client: MlflowClient, run_id: str) -> None:
    """End the new run FAILED, best effort: the caller's own exception is what must surface."""
    try:
        active = mlflow.active_run()
        with quiet_run_end():
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            else:
                client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001 - the run stays RUNNING; reconcile ends it FAILED later
        pass
