"""★ A sweep in MLflow: one parent run per sweep root, its trials' active runs as its children.

The sweep root is a logical run of its own (logical id: the root's URL; record: its sweep.lock),
superseded like any other (`supersede.superseding_run`: the same status chain and lock). Its
run carries `flexlock.study_key_hash`, `flexlock.sweep=true` and the space, and logs the trials
table, the best trial and a plot of the metric against each swept key. A trial's runs carry
`flexlock.study_key_hash`, `flexlock.trial_key_hash` and `mlflow.parentRunId`.

Who points a trial's run at the parent, so that every active trial run names the active parent:

- a parent relog, right after its run became active and under the root's lock, *adopts* every
  trial's active run (sets the three tags where they differ);
- a trial relog, right after its run became active, *attaches* it under the same lock: it
  reads the active parent and tags its run (no parent yet: left unparented, the parent's first
  relog adopts it).

Whichever of the two commits last, under the root's lock, sees the other's active run, so no
active trial run is left pointing at a deprecated parent. A trial knows it is one from its
save_dir: named `trial-…`, with a sweep.lock listing it in the directory above (read once per
relog; the tags are what searches and helpers read afterwards).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from flexlock_prefect import storage
from flexlock_prefect._version import __version__
from flexlock_prefect.exceptions import RunLockError, SweepError
from flexlock_prefect.lock import RunLock, canonical_json, logical_run_key, save_dir_name
from flexlock_prefect.metrics import read_metrics
from flexlock_prefect.study import TRIAL_PREFIX
from flexlock_prefect.sweeplock import SWEEP_LOCK_FILENAME, SweepLock
from flexlock_prefect.tracking import tags as t
from flexlock_prefect.tracking.client import all_experiment_ids, connect, experiment_id, log_batch
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.outcomes import RelogOutcome
from flexlock_prefect.tracking.record import TAG_VALUE_LIMIT, config_experiment
from flexlock_prefect.tracking.supersede import RunView, active_run_of, active_runs, superseding_run

logger = logging.getLogger(__name__)

PARENT_VERSION = f"sweep-parent-{__version__}"
"""The diag version of parent runs: their logging is flexlock-prefect's own."""


@dataclass(frozen=True)
class SweepKeys:
    """The keys of a run in a sweep: its root, the study key and, for a trial, its key."""

    root: str
    study_key_hash: str
    trial_key_hash: str | None = None

    def trial_tags(self) -> dict[str, str]:
        """The tags that say a trial's run belongs to this sweep (the parent id comes apart)."""
        return {
            t.STUDY_KEY_HASH: self.study_key_hash,
            t.TRIAL_KEY_HASH: self.trial_key_hash or "",
            t.SWEEP_ROOT_KEY: logical_run_key(self.root),
        }


def trial_keys(lock: RunLock) -> SweepKeys | None:
    """The sweep of a trial's save_dir, from the sweep.lock above it; None for any other save_dir
    (no `trial-` name: no read at all), or one that sweep.lock does not list."""
    if not save_dir_name(lock.logical_run_id).startswith(TRIAL_PREFIX):
        return None
    root = lock.logical_run_id.rsplit("/", 1)[0]
    try:
        sweep = SweepLock.load(root)
    except SweepError:
        return None
    listed = next((trial for trial in sweep.trials if trial.save_dir == lock.logical_run_id), None)
    return SweepKeys(sweep.root, sweep.study_key_hash, listed.trial_key_hash) if listed else None


def keys_of(run: Run) -> SweepKeys | None:
    """A parent's or a trial's keys, read back from its tags, else recomputed from sweep.lock.

    Example:
        >>> keys_of(MlflowClient().get_run(run_id)).study_key_hash  # doctest: +SKIP
    """
    tags = run.data.tags
    logical_id = tags.get(t.LOGICAL_RUN_ID, "")
    if t.STUDY_KEY_HASH in tags:
        root = logical_id if tags.get(t.SWEEP) == "true" else logical_id.rsplit("/", 1)[0]
        return SweepKeys(root, tags[t.STUDY_KEY_HASH], tags.get(t.TRIAL_KEY_HASH))
    try:
        return trial_keys(RunLock.load(logical_id))
    except RunLockError:  # no run.lock there: a sweep root, or neither
        try:
            return SweepKeys(logical_id, SweepLock.load(logical_id).study_key_hash)
        except SweepError:
            return None


def attach(keys: SweepKeys, run_id: str, serialize: Serializer | None = None) -> str | None:
    """Make the trial's (just committed) run a child of the sweep's active parent, if there is one;
    returns the parent's id. Under the root's lock: see the module docstring."""
    with (serialize or unserialized)(logical_run_key(keys.root)):
        parent = active_run_of(keys.root)
        if parent is not None:
            tracking = connect()
            with tracking.errors():
                tracking.client.set_tag(run_id, t.MLFLOW_PARENT_RUN_ID, parent.info.run_id)
    return parent.info.run_id if parent else None


def relog_sweep(
    root: str,
    *,
    force: bool = False,
    experiment: str | None = None,
    serialize: Serializer | None = None,
) -> RelogOutcome:
    """Relog a sweep root as its parent run, then adopt every trial's active run as its child.
    Skipped (but still adopting) when the active parent was logged from the same sweep.lock and
    trial records by this version. Raises what goes wrong (a missing sweep.lock: `SweepError`).

    Example:
        >>> relog_sweep("sweeps/c").run_id  # doctest: +SKIP
    """
    sweep = SweepLock.load(root)
    trials = _trial_rows(sweep)
    digest = hashlib.sha256(canonical_json({"sweep": sweep.model_dump(mode="json"), "trials": trials})).hexdigest()
    name = config_experiment(sweep.base.get("config", {}), experiment)
    tracking = connect()
    active = active_run_of(sweep.root)
    if not force and active is not None:
        tags = active.data.tags
        with tracking.errors():
            same_place = active.info.experiment_id == experiment_id(tracking, name)
        if same_place and tags.get(t.LOCK_DIGEST) == digest and tags.get(t.DIAG_VERSION) == PARENT_VERSION:
            with (serialize or unserialized)(logical_run_key(sweep.root)), tracking.errors():
                client = tracking.client
                _adopt(client, all_experiment_ids(client), sweep, active.info.run_id)
            return RelogOutcome(sweep.root, "skipped", active.info.run_id)
    view = RunView(
        sweep.root,
        name,
        f"sweep-{save_dir_name(sweep.root)}",
        _parent_tags(sweep, digest),
        lambda client, run: _log_parent(client, run, sweep, trials),
        committed=lambda client, everywhere, run_id: _adopt(client, everywhere, sweep, run_id),
    )
    with superseding_run(sweep, view, serialize=serialize, fluent=False) as relog:
        pass
    return RelogOutcome(sweep.root, "relogged", relog.run_id, relog.superseded_run_ids)


def _parent_tags(sweep: SweepLock, digest: str) -> dict[str, str]:
    space = json.dumps(sweep.space, sort_keys=True)
    tags = {
        t.LOGICAL_RUN_ID: sweep.root,
        t.LOGICAL_RUN_KEY: logical_run_key(sweep.root),
        t.STUDY_KEY_HASH: sweep.study_key_hash,
        t.SWEEP: "true",
        t.SWEEP_SPACE: space if len(space) <= TAG_VALUE_LIMIT else f"in artifact {SWEEP_LOCK_FILENAME}, key space",
        t.LOCK_DIGEST: digest,
        t.DIAG_VERSION: PARENT_VERSION,
        t.MLFLOW_RUN_NAME: f"sweep-{save_dir_name(sweep.root)}",
        t.MLFLOW_SOURCE_TYPE: "JOB",
        t.MLFLOW_SOURCE_NAME: f"sweep of {sweep.flow}",
        t.MLFLOW_NOTE: f"**flexlock sweep** `{sweep.root}`\n\n- study key `{sweep.study_key_hash}`",
    }
    return tags | ({t.BEST_TRIAL_KEY_HASH: sweep.best.trial_key_hash} if sweep.best else {})


def _trial_rows(sweep: SweepLock) -> list[dict[str, Any]]:
    """One row per trial: key, save_dir name, values, status, its run.lock digest and metrics."""
    rows = []
    for trial in sweep.trials:
        try:
            digest = RunLock.load(trial.save_dir).digest
        except RunLockError:
            digest = None
        try:
            metrics = read_metrics(trial.save_dir) if trial.status == "completed" else {}
        except ValueError:  # not JSON: the row says nothing of its metrics
            metrics = {}
        rows.append(
            {
                "trial_key_hash": trial.trial_key_hash,
                "trial": save_dir_name(trial.save_dir),
                "status": trial.status,
                "lock_digest": digest,
                **{f"values.{k}": v for k, v in trial.values.items()},
                **{f"metrics.{k}": v for k, v in metrics.items()},
            }
        )
    return rows


def _log_parent(client: MlflowClient, run: Run, sweep: SweepLock, rows: list[dict[str, Any]]) -> None:
    """Params, the best trial's metric and the artifacts: sweep.lock, the trials table, plots."""
    run_id = run.info.run_id
    params = {"sweep.flow": sweep.flow, "sweep.mode": sweep.mode, "sweep.trials": str(len(sweep.trials))}
    log_batch(client, run_id, params=params | ({"sweep.metric": sweep.metric} if sweep.metric else {}))
    counts = [Metric(f"trials.{status}", sweep.count(status), 0, 0) for status in ("completed", "failed")]
    best = [Metric(f"best.{sweep.best.metric}", sweep.best.value, 0, 0)] if sweep.best else []
    client.log_batch(run_id, metrics=counts + best)
    with tempfile.TemporaryDirectory() as scratch:
        text = storage.read_bytes(storage.join(sweep.root, SWEEP_LOCK_FILENAME))
        for name in (SWEEP_LOCK_FILENAME, f"{SWEEP_LOCK_FILENAME}.yaml"):  # .yaml: MLflow's UI previews it
            Path(scratch, name).write_bytes(text)
        Path(scratch, "trials.json").write_text(json.dumps(rows, indent=2) + "\n")
        Path(scratch, "trials.csv").write_text(_csv(rows))
        if sweep.metric:
            _plot(Path(scratch), sweep, rows)
        get_artifact_repository(run.info.artifact_uri).log_artifacts(scratch)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _plot(scratch: Path, sweep: SweepLock, rows: list[dict[str, Any]]) -> None:
    """`<metric>-vs-<key>.png` per swept key, the completed trials' values; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        logger.info("matplotlib is not installed: the sweep's parent run has no plots")
        return
    metric = f"metrics.{sweep.metric}"
    scored = [row for row in rows if row.get(metric) is not None]
    for key in sorted({k for row in scored for k in row if k.startswith("values.")}):
        points = [(row[key], row[metric]) for row in scored if key in row]
        figure, axes = pyplot.subplots(figsize=(5, 3.5))
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _ in points)
        axes.scatter([x if numeric else str(x) for x, _ in points], [y for _, y in points])
        if numeric and all(x > 0 for x, _ in points) and max(x for x, _ in points) > 10 * min(x for x, _ in points):
            axes.set_xscale("log")
        axes.set_xlabel(key.removeprefix("values."))
        axes.set_ylabel(sweep.metric)
        figure.tight_layout()
        figure.savefig(scratch / f"{sweep.metric}-vs-{key.removeprefix('values.')}.png", dpi=80)
        pyplot.close(figure)


def _adopt(client: MlflowClient, everywhere: Sequence[str], sweep: SweepLock, parent_id: str) -> None:
    """Give every trial's active run the parent `parent_id` and the sweep's keys, where they differ.
    One search finds the runs tagged with the root; a trial it misses (logged without the tags)
    costs a search of its own."""
    tagged = {
        run.data.tags.get(t.LOGICAL_RUN_KEY): run
        for run in client.search_runs(
            list(everywhere),
            filter_string=f"tags.`{t.SWEEP_ROOT_KEY}` = '{logical_run_key(sweep.root)}' "
            f"AND tags.`{t.STATUS}` = '{t.ACTIVE}'",
            max_results=1000,
        )
    }
    for trial in sweep.trials:
        key = logical_run_key(trial.save_dir)
        run = tagged.get(key) or next(iter(active_runs(client, everywhere, key)), None)
        if run is None:
            continue
        wanted = SweepKeys(sweep.root, sweep.study_key_hash, trial.trial_key_hash).trial_tags()
        wanted[t.MLFLOW_PARENT_RUN_ID] = parent_id
        changed = {k: v for k, v in wanted.items() if run.data.tags.get(k) != v}
        if changed:
            log_batch(client, run.info.run_id, tags=changed)
