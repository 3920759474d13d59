"""Prefect artifacts of a run: the run.lock for people (markdown), data digests (table), progress;
any `report.Table` (a batch's outcomes) as a table artifact; a sweep's trials and progress.

Artifacts are keyed `run-lock-<logical run key>`, so the Prefect UI keeps one history per
logical run: every run of the same save_dir adds a version under the same key. A sweep's are
keyed by its root likewise (`sweep-trials-<key>`, `sweep-progress-<key>`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

import mlflow
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flexlock_prefect.lock import RunLock, logical_run_key, save_dir_name
from flexlock_prefect.redact import strip_url_credentials
from flexlock_prefect.report import Table, lock_tables, sweep_table
from flexlock_prefect.settings import get_settings
from flexlock_prefect.sweeplock import SweepLock
from flexlock_prefect.tracking.client import run_url

PROGRESS_INTERVAL_S = 1.0
"""A progress artifact is updated at most this often: each update is one request to the Prefect API."""


def artifact_key(logical_run_id: str, kind: str = "run-lock") -> str:
    """`run-lock-<16 hex>`; Prefect keys allow only lowercase letters, digits and dashes."""
    return f"{kind}-{logical_run_key(logical_run_id)}"


def publish_lock(lock: RunLock) -> None:
    """The markdown record and the table of data digests, under the logical run's keys."""
    status = lock.result.status if lock.result else "started"
    name = save_dir_name(lock.logical_run_id)
    create_markdown_artifact(
        markdown=lock_markdown(lock),
        key=artifact_key(lock.logical_run_id),
        description=f"{name}: run.lock, {status} ({lock.logical_run_id})",
    )
    create_table_artifact(
        table=[
            {"name": name, "uri": d.uri, "algorithm": d.algorithm, "digest": d.digest, "size": d.size, "files": d.files}
            for name, d in lock.data.items()
        ],
        key=artifact_key(lock.logical_run_id, "run-data"),
        description=f"{name}: data digests ({lock.logical_run_id})",
    )


def publish_mlflow_link(logical_run_id: str, run_id: str, experiment_id: str | None = None) -> None:
    """The logical run's `mlflow-run-<key>` artifact: a link to its MLflow run (a note naming the
    run for a tracking store without a UI URL). Every relog through flexlock's Prefect side
    publishes it, so its newest version is the active run, not one deprecated since."""
    uri = mlflow.get_tracking_uri()
    key = artifact_key(logical_run_id, "mlflow-run")
    description = f"{save_dir_name(logical_run_id)}: active MLflow run ({logical_run_id})"
    url = run_url(uri, run_id, experiment_id)
    if url:
        create_link_artifact(link=url, link_text=f"MLflow run {run_id}", key=key, description=description)
    else:
        create_markdown_artifact(
            markdown=f"MLflow run `{run_id}`{f' in experiment `{experiment_id}`' if experiment_id else ''} "
            f"(tracking store `{strip_url_credentials(uri)}`; browse it with `mlflow ui`).",
            key=key,
            description=description,
        )


def publish_table(table: Table, key: str, description: str | None = None) -> None:
    """A `report.Table` as a table artifact: one row per row, keyed by the column names."""
    create_table_artifact(
        table=[dict(zip(table.columns, row, strict=True)) for row in table.rows],
        key=key,
        description=description or table.title,
    )


def publish_sweep(lock: SweepLock, progress_id: UUID | None = None) -> UUID:
    """A sweep's trials as a new version of the table `sweep-trials-<root key>`, and its share of
    finished trials in a progress artifact (created when `progress_id` is None); returns that id."""
    if lock.n_trials:  # asked of a sampler: the share of the completed trials wanted
        progress = 100.0 * min(lock.count("completed"), lock.n_trials) / lock.n_trials
    else:
        total = len(lock.trials)
        finished = total - lock.count("pending") - lock.count("running")
        progress = 100.0 * finished / total if total else 100.0
    if progress_id is None:
        progress_id = create_progress_artifact(
            progress=progress,
            key=artifact_key(lock.root, "sweep-progress"),
            description=f"{save_dir_name(lock.root)}: trials finished",
        )
    else:
        update_progress_artifact(progress_id, progress=progress)
    table = sweep_table(lock)
    publish_table(table, artifact_key(lock.root, "sweep-trials"), f"{save_dir_name(lock.root)}: {table.title}")
    return progress_id


def publish_skipped(previous_save_dir: str, fingerprint: str) -> None:
    """Say, on the flow run, that an identical completed run made this one unnecessary."""
    create_markdown_artifact(
        markdown=(
            f"Skipped: the inputs (fingerprint `{fingerprint}`) are identical to those of the "
            f"completed run `{previous_save_dir}`, whose outputs are reused."
        ),
        key=artifact_key(previous_save_dir, "run-skipped"),
        description="identical run found; compute skipped",
    )


def lock_markdown(lock: RunLock) -> str:
    sections = [f"# Run record\n\n`{lock.logical_run_id}`"]
    sections += [markdown_table(table) for table in lock_tables(lock) if table.rows]
    return "\n\n".join(sections) + "\n"


def markdown_table(table: Table) -> str:
    """A `report.Table` as a markdown section: its title as a heading, then the table."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join([f"## {table.title}", "", header, rule, *rows])


def _cell(text: str) -> str:
    escaped = text.replace("|", "\\|").replace("\n", " ")
    return f"`{escaped}`" if escaped and len(escaped) > 40 and " " not in escaped else escaped


@contextmanager
def progress_artifact(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A Prefect progress artifact updated at most once a second; fits `capture.data.ProgressFactory`.

    Only hashing of at least `FLEXLOCK_PROGRESS_MIN_BYTES` gets one, so quick captures do not
    clutter the flow run. `advance` is called from hashing threads, hence the lock.
    """
    if total <= 0 or total < get_settings().progress_min_bytes:
        yield lambda _: None
        return
    artifact_id = create_progress_artifact(progress=0.0, description=description)
    guard = threading.Lock()
    state = {"done": 0, "reported_at": time.monotonic()}

    def advance(count: int) -> None:
        with guard:
            state["done"] += count
            now = time.monotonic()
            if now - state["reported_at"] < PROGRESS_INTERVAL_S:
                return
            state["reported_at"] = now
            progress = min(100.0, 100 * state["done"] / total)
        update_progress_artifact(artifact_id, progress=progress)

    yield advance
    update_progress_artifact(artifact_id, progress=100.0)
