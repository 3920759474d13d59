"""`diag_flow` and the public `mlflowlink`: relogging a save_dir to MLflow from Prefect.

`diag_flow` turns `def diag(save_dir: str, run) -> None` into a Prefect flow that opens a new
MLflow run for the save_dir (see `supersede.py`), runs the body in it, publishes a link to the
run as an artifact and announces it with `flexlock.run.relogged`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flexlock_prefect import events
from flexlock_prefect.artifacts import artifact_key
from flexlock_prefect.redact import strip_url_credentials
from flexlock_prefect.relogging import DiagBody, code_version, relog_one, run_lock
from flexlock_prefect.supersede import Relog, linked_run


@contextmanager
def mlflowlink(
    save_dir: str,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Log `save_dir` to MLflow as a new run that supersedes the active one when the block succeeds.

    Inside the block the run is MLflow's active run, so `mlflow.log_metric` and friends log to it.
    Relogs of the same save_dir wait for each other when a Prefect API is configured.

    Example:
        >>> with mlflowlink("runs/2026-11-22", experiment="proj") as run:  # doctest: +SKIP
        ...     mlflow.log_metric("acc", 0.9)
    """
    with linked_run(save_dir, experiment, run_name, tags, serialize=run_lock) as relog:
        yield relog.run


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
            outcome, relog = relog_one(save_dir, body, force=force, experiment=experiment, version=version)
            if relog is None:
                logger.info("%s: %s, nothing logged", outcome.save_dir, outcome.outcome)
                return None
            publish_link(relog)
            emit_relogged(relog)
            logger.info("%s logged as MLflow run %s", outcome.save_dir, relog.run_id)
            return relog.run_id

        for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(run, attribute, getattr(body, attribute))
        return flow(**flow_kwargs)(run)

    return decorate(fn) if fn is not None else decorate
