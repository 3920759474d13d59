"""Relogging to MLflow from Prefect: `diag_flow`, and the public `mlflowlink`, `relog`, `reconcile`.

`diag_flow` turns `def diag(save_dir: str, run) -> None` into a Prefect flow that opens a new
MLflow run for the save_dir (see `tracking/supersede.py`), runs the body in it, publishes a link
to the run as an artifact and announces it with `flexlock.run.relogged`.

`mlflowlink`, `relog` and `reconcile` are those of `flexlock_prefect.tracking` with the logical
run's Prefect lock (`concurrency.run_lock`): relogs and repairs of one save_dir wait for each
other when a Prefect API is configured, from any process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import mlflow
from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flexlock_prefect import events, tracking
from flexlock_prefect.artifacts import artifact_key
from flexlock_prefect.concurrency import run_lock
from flexlock_prefect.redact import strip_url_credentials
from flexlock_prefect.tracking.relog import DiagBody, code_version, relog_one
from flexlock_prefect.tracking.supersede import Relog

Operation = TypeVar("Operation", bound=Callable[..., Any])


def _with_run_lock(operation: Operation) -> Operation:
    """`operation` with `serialize=run_lock` unless the caller passes its own lock."""

    @functools.wraps(operation)
    def locked(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("serialize", run_lock)
        return operation(*args, **kwargs)

    return locked  # type: ignore[return-value]


mlflowlink = _with_run_lock(tracking.mlflowlink)
relog = _with_run_lock(tracking.relog)
reconcile = _with_run_lock(tracking.reconcile)


@task(name="publish-mlflow-link", cache_policy=NO_CACHE)
def publish_link(relog: Relog) -> None:
    uri = mlflow.get_tracking_uri()
    run = relog.run  # holds the experiment id already: no request needed
    description = f"MLflow run of {relog.lock.logical_run_id}"
    key = artifact_key(relog.lock.logical_run_id, "mlflow-run")
    if uri.startswith(("http://", "https://")):
        url = f"{strip_url_credentials(uri).rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{relog.run_id}"
        create_link_artifact(link=url, link_text=f"MLflow run {relog.run_id}", key=key, description=description)
    else:
        create_markdown_artifact(
            markdown=f"MLflow run `{relog.run_id}` in experiment `{run.info.experiment_id}` "
            f"(tracking store `{strip_url_credentials(uri)}`; browse it with `mlflow ui`).",
            key=key,
            description=description,
        )


@task(name="emit-relogged-event", cache_policy=NO_CACHE)
def emit_relogged(relog: Relog) -> None:
    events.emit_relogged(relog.lock, relog.run_id, relog.superseded_run_ids)


def diag_flow(
    fn: DiagBody | None = None, /, *, experiment: str | None = None, **flow_kwargs: Any
) -> Flow[..., str | None] | Callable[[DiagBody], Flow[..., str | None]]:
    """Turn `diag(save_dir, run)` into a Prefect flow that relogs save_dir to MLflow with it.

    The flow's parameters are `save_dir` and `force`. It returns the new MLflow run id, or None
    when nothing was logged: the active run already holds this lock digest and this diag code
    (unless `force`), or the run's config says `mlflow.enabled: false`.

    Example:
        >>> @diag_flow  # doctest: +SKIP
        ... def diag(save_dir: str, run) -> None:
        ...     mlflow.log_metric("acc", json.load(open(f"{save_dir}/metrics.json"))["acc"])
    """

    def decorate(body: DiagBody) -> Flow[..., str | None]:
        version = code_version(body)

        def run(save_dir: str, force: bool = False) -> str | None:
            logger = get_run_logger()
            outcome, logged = relog_one(
                save_dir, body, force=force, experiment=experiment, version=version, serialize=run_lock
            )
            if logged is None:
                logger.info("%s: %s, nothing logged", outcome.save_dir, outcome.outcome)
                return None
            publish_link(logged)
            emit_relogged(logged)
            logger.info("%s logged as MLflow run %s", outcome.save_dir, logged.run_id)
            return logged.run_id

        for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(run, attribute, getattr(body, attribute))
        return flow(**flow_kwargs)(run)

    return decorate(fn) if fn is not None else decorate
