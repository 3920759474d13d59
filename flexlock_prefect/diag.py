"""Relogging to MLflow from Prefect: `diag_flow`, and the public `mlflowlink`, `relog`, `reconcile`.

`diag_flow` turns `def diag(save_dir: str, run) -> None` into a Prefect flow that opens a new
MLflow run for the save_dir (see `tracking/supersede.py`), runs the body in it, publishes a link
to the run as an artifact and announces it with `flexlock.run.relogged`.

`mlflowlink`, `relog`, `reconcile` and `relog_sweep` (a sweep root's parent run) are those of
`flexlock_prefect.tracking` with the logical run's Prefect lock (`concurrency.run_lock`): relogs
and repairs of one save_dir wait for each other when a Prefect API is configured, from any
process. `relog_all` is the flow that relogs a root and reports every save_dir's outcome in a table artifact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flexlock_prefect import events, storage, tracking
from flexlock_prefect._user_flow import load_entrypoint, user_flow
from flexlock_prefect.artifacts import publish_mlflow_link, publish_table
from flexlock_prefect.concurrency import run_lock
from flexlock_prefect.credentials import mlflow_credentials
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.report import relog_failures, relog_table
from flexlock_prefect.sweeplock import SWEEP_LOCK_FILENAME
from flexlock_prefect.tracking import sweeps
from flexlock_prefect.tracking.locking import Serializer
from flexlock_prefect.tracking.outcomes import RELOG_KINDS, RelogOutcome
from flexlock_prefect.tracking.relog import DiagBody, code_version, relog_one
from flexlock_prefect.tracking.supersede import Relog

Operation = TypeVar("Operation", bound=Callable[..., Any])
_SPEC = "flexlock_diag_spec"


def _with_run_lock(operation: Operation) -> Operation:
    """`operation` with `serialize=run_lock` unless the caller passes its own lock."""

    @functools.wraps(operation)
    def locked(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("serialize", run_lock)
        return operation(*args, **kwargs)

    return locked  # type: ignore[return-value]


mlflowlink = _with_run_lock(tracking.mlflowlink)
reconcile = _with_run_lock(tracking.reconcile)
relog_sweep = _with_run_lock(sweeps.relog_sweep)


@task(name="publish-mlflow-link", cache_policy=NO_CACHE)
def publish_link(relog: Relog[RunLock]) -> None:
    # the run holds its experiment id already: no request needed
    publish_mlflow_link(relog.lock.logical_run_id, relog.run_id, relog.run.info.experiment_id if relog.run else None)


@task(name="emit-relogged-event", cache_policy=NO_CACHE)
def emit_relogged(relog: Relog[RunLock]) -> None:
    events.emit_relogged(relog.lock, relog.run_id, relog.superseded_run_ids)


@dataclass(frozen=True)
class DiagSpec:
    """What relogging needs of a diag: its body, its experiment (None: from each run's config)
    and the version naming its code."""

    body: DiagBody
    experiment: str | None
    version: str


def diag_spec(diag: Flow[..., Any] | DiagBody | DiagSpec) -> DiagSpec:
    """The spec of a `diag_flow` (its body and experiment), or of a plain body `(save_dir, run)`."""
    if isinstance(diag, DiagSpec):
        return diag
    spec = getattr(getattr(diag, "fn", None), _SPEC, None)
    if spec is not None:
        return spec
    if isinstance(diag, Flow):
        raise FlexlockError(
            f"flow {diag.name!r} is not a diag_flow: give a flow made with `diag_flow`, or a body `(save_dir, run)`"
        )
    return DiagSpec(diag, None, code_version(diag))


def load_diag(entrypoint: str) -> DiagSpec:
    """The diag at `path/to/file.py:name` or `package.module.name`: a `diag_flow` or a plain body."""
    found = load_entrypoint(entrypoint, "the diag")
    if not callable(found):
        raise FlexlockError(f"{entrypoint!r} is not a diag_flow or a function `(save_dir, run)`")
    return diag_spec(found)


def diag_flow(
    fn: DiagBody | None = None,
    /,
    *,
    experiment: str | None = None,
    version: str | None = None,
    **flow_kwargs: Any,
) -> Flow[..., str | None] | Callable[[DiagBody], Flow[..., str | None]]:
    """Turn `diag(save_dir, run)` into a Prefect flow that relogs save_dir to MLflow with it.

    The flow's parameters are `save_dir` and `force`. It returns the new MLflow run id, or None
    when nothing was logged: the active run already holds this lock digest and this diag code
    (unless `force`), or the run's config says `mlflow.enabled: false`. The body gets `save_dir`
    as a plain path for a local save_dir and as the `s3://` URL otherwise (`storage` reads both).

    Both forms deploy: the decorator, and a call whose flow is bound to another module-level
    name (`diag = diag_flow(log_my_run, name="diag")`). The flow is named after the body unless
    `name=` says otherwise; any other `prefect.flow` keyword passes through.

    Args:
        experiment: the MLflow experiment (default: each run's config, see README).
        version: names the diag code (default: `code_version(body)`); relogs skip save_dirs
            whose active run was logged from the same record by the same version.

    Example:
        >>> @diag_flow(experiment="proj")  # doctest: +SKIP
        ... def diag(save_dir: str, run) -> None:
        ...     metrics = json.loads(storage.read_text(storage.join(save_dir, "metrics.json")))
        ...     mlflow.log_metric("acc", metrics["acc"])
    """

    def decorate(body: DiagBody) -> Flow[..., str | None]:
        spec = DiagSpec(body, experiment, version or code_version(body))

        def run(save_dir: str, force: bool = False) -> str | None:
            logger = get_run_logger()
            with mlflow_credentials():
                outcome, logged = relog_one(
                    save_dir,
                    spec.body,
                    force=force,
                    experiment=spec.experiment,
                    version=spec.version,
                    serialize=run_lock,
                )
            if logged is None:
                logger.info("%s: %s, nothing logged", outcome.save_dir, outcome.outcome)
                return None
            publish_link(logged)
            emit_relogged(logged)
            logger.info("%s logged as MLflow run %s", outcome.save_dir, logged.run_id)
            return logged.run_id

        setattr(run, _SPEC, spec)  # on the function: copies made by `with_options` share it
        return user_flow(body, run, flow_kwargs)

    return decorate(fn) if fn is not None else decorate


def relog(
    save_dirs: Sequence[str] = (),
    *,
    root: str | None = None,
    force: bool = False,
    diag: Flow[..., Any] | DiagBody | DiagSpec | None = None,
    experiment: str | None = None,
    workers: int | None = None,
    serialize: Serializer | None = run_lock,
    recorded_by: str | None = None,
) -> list[RelogOutcome]:
    """Relog save_dirs (and every save_dir under `root`) with `diag`, under their Prefect locks.

    `diag` is a `diag_flow` (its body, experiment and version are used) or a plain body; by
    default the standard body. Returns one `RelogOutcome` per save_dir: one that fails is a
    `failed` outcome with its reason and never stops the others; errors of the whole batch are
    raised. `flexlock_prefect.tracking.relog` says which errors are which.

    Example:
        >>> outcomes = relog(root="/runs", diag=my_diag)  # doctest: +SKIP
        >>> [(o.save_dir, o.reason) for o in outcomes if o.outcome == "failed"]  # doctest: +SKIP
    """
    spec = diag_spec(diag) if diag is not None else None
    return tracking.relog(
        save_dirs,
        root=root,
        force=force,
        diag=spec.body if spec else None,
        experiment=experiment or (spec.experiment if spec else None),
        version=spec.version if spec else None,
        workers=workers,
        serialize=serialize,
        recorded_by=recorded_by,
    )


@flow(name="relog-all", log_prints=True)
def relog_all(root: str, force: bool = False, diag: str | None = None, main: str | None = None) -> dict[str, int]:
    """Relog every save_dir under `root` with the diag at entrypoint `diag` (the standard body if
    None), only those recorded by the main flow named `main` if given; announce each relog, list
    every save_dir's outcome in a `relog-all` table artifact and return the count of each outcome.

    A save_dir that fails does not stop the others: once all are done and the table is
    published, the flow ends Failed with a message naming the failed save_dirs. Errors of the
    whole batch (no save_dir under `root`, tracking server unreachable) fail it at once.

    A pipeline's relog-all deployment sets `diag` to its diag flow's entrypoint and `main` to its
    main flow's name, so a root shared by several pipelines is relogged pipeline by pipeline.
    """
    logger = get_run_logger()
    with mlflow_credentials():
        outcomes = relog(root=root, force=force, diag=load_diag(diag) if diag else None, recorded_by=main)
    table = relog_table(outcomes)
    publish_table(table, "relog-all", f"relog of every save_dir under {root}: {table.title}")
    for outcome in outcomes:
        if outcome.outcome == "relogged" and outcome.run_id:
            publish_mlflow_link(outcome.save_dir, outcome.run_id)  # the link follows every relog
            try:
                events.emit_relogged(RunLock.load(outcome.save_dir), outcome.run_id, outcome.superseded_run_ids)
            except FlexlockError as exc:
                if not storage.exists(storage.join(outcome.save_dir, SWEEP_LOCK_FILENAME)):
                    # its run.lock changed since: the relog stands, the event is lost
                    logger.warning("%s: no relogged event: %s", outcome.save_dir, exc)
                # a sweep root's parent run: flexlock.run.relogged announces runs of a run.lock only
    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in RELOG_KINDS}
    print(f"{root}: {counts}")
    if message := relog_failures(outcomes):
        raise FlexlockError(message)
    return counts
