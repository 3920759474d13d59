"""Relogging run directories to MLflow (one, many, or all under a root) and repairing chains.

Both take the logical run's lock that the caller passes (`flexlock_prefect.relog` and
`reconcile` pass a Prefect global concurrency limit, when a Prefect API is configured), so any
number of processes, workers and deployments can relog and reconcile the same save_dirs at once
and still leave one active run and one chain per logical id.

Both are batches that report every item (`tracking/outcomes.py`): one bad save_dir or logical
run becomes a `failed` outcome and never stops the others.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

import mlflow
from mlflow import MlflowClient

from flexlock_prefect import storage
from flexlock_prefect._version import __version__
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.lock import RunLock, find_records, logical_run_key
from flexlock_prefect.settings import get_settings
from flexlock_prefect.sweeplock import SWEEP_LOCK_FILENAME, SweepLock
from flexlock_prefect.tracking.client import Tracking, all_experiment_ids, connect, experiment_id
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.outcomes import ReconcileOutcome, RelogOutcome, failure_reason
from flexlock_prefect.tracking.outputs import log_outputs, uses_fluent_run
from flexlock_prefect.tracking.record import experiment_name, mlflow_enabled
from flexlock_prefect.tracking.supersede import (
    Relog,
    current_active,
    linked_run,
    repair_chain,
    runs_of,
)
from flexlock_prefect.tracking.sweeps import attach, relog_sweep, trial_keys
from flexlock_prefect.tracking.tags import DIAG_VERSION, LOCK_DIGEST, LOGICAL_RUN_ID, LOGICAL_RUN_KEY

logger = logging.getLogger(__name__)

DiagBody = Callable[[str, mlflow.ActiveRun], None]


def code_version(body: Callable[..., object]) -> str:
    """16 hex naming the diag code: the source of `body`, of the functions and classes of its own
    module that it uses (directly or through each other), and the flexlock-prefect version.

    A save_dir whose active run was logged from the same lock digest by the same diag code is
    already up to date. Editing one body of a module therefore relogs only its own save_dirs;
    code the body imports from other modules of the user's does not count (give
    `diag_flow(version=...)` to name such a dependency).

    Example:
        >>> code_version(log_outputs)  # doctest: +SKIP
        '3f0c9a1e5b7d2c44'
    """
    parts = [__version__]
    for used in _own_module_code(body):
        try:
            parts.append(inspect.getsource(used))
        except (OSError, TypeError):
            parts.append(f"{used.__module__}.{used.__qualname__}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _own_module_code(body: Callable[..., object]) -> list[Callable[..., object] | type]:
    """`body` and what it uses of its own module's functions and classes, in a stable order."""
    body = inspect.unwrap(body)
    namespace = getattr(body, "__globals__", {})
    found: dict[str, Callable[..., object] | type] = {}
    pending: list[Callable[..., object] | type] = [body]
    while pending:
        item = pending.pop()
        key = f"{item.__module__}.{item.__qualname__}"
        if key in found:
            continue
        found[key] = item
        for name in _global_names(item):
            used = namespace.get(name)
            if (inspect.isfunction(used) or inspect.isclass(used)) and used.__module__ == body.__module__:
                pending.append(used)
    return [found[key] for key in sorted(found)]


def _global_names(item: Callable[..., object] | type) -> set[str]:
    """Global names a function's code (nested functions included), or a class's methods, refer to."""
    functions = [v for v in vars(item).values() if inspect.isfunction(v)] if inspect.isclass(item) else [item]
    codes = [f.__code__ for f in functions if hasattr(f, "__code__")]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [const for const in code.co_consts if inspect.iscode(const)]
    return names


def body_save_dir(logical_run_id: str) -> str:
    """What a diag body gets: a plain path for a local save_dir, the URL for a remote one."""
    path = storage.local_path(logical_run_id)
    return str(path) if path is not None else logical_run_id


def relog_one(
    save_dir: str | RunLock,
    diag: DiagBody = log_outputs,
    *,
    force: bool = False,
    experiment: str | None = None,
    version: str | None = None,
    serialize: Serializer | None = None,
    on_run: Callable[[str], None] | None = None,
) -> tuple[RelogOutcome, Relog[RunLock] | None]:
    """Relog one save_dir (or its loaded lock) with `diag(save_dir, run)` as the body, unless it
    is up to date. Whatever goes wrong is raised: the diag flow ends Failed with it.

    The body's run is MLflow's fluent active run, as `mlflowlink` gives it, unless the body is
    marked `logs_through_client` (as the default body is): three requests fewer. `on_run` is
    called with the new run's id before the body runs.
    """
    lock = save_dir if isinstance(save_dir, RunLock) else RunLock.load(save_dir)
    if not mlflow_enabled(lock):
        logger.info("%s: mlflow.enabled is false in its config; nothing logged", lock.logical_run_id)
        return RelogOutcome(lock.logical_run_id, "disabled"), None
    version = version or code_version(diag)
    if not force and (active := current_active(lock)) is not None:
        tags = active.data.tags
        if tags.get(LOCK_DIGEST) == lock.digest and tags.get(DIAG_VERSION) == version:
            tracking = connect()
            with tracking.errors():  # up to date only if it is in the experiment asked for
                target = experiment_id(tracking, experiment_name(lock, experiment))
            if active.info.experiment_id == target:
                return RelogOutcome(lock.logical_run_id, "skipped", active.info.run_id), None
    keys = trial_keys(lock)
    tags = keys.trial_tags() if keys else None
    fluent = uses_fluent_run(diag)
    with linked_run(lock, experiment, tags=tags, diag_version=version, serialize=serialize, fluent=fluent) as relog:
        if on_run is not None:
            on_run(relog.run_id)
        diag(body_save_dir(lock.logical_run_id), relog.run)
    if keys is not None:  # after the commit: see tracking/sweeps.py
        attach(keys, relog.run_id, serialize)
    outcome = RelogOutcome(lock.logical_run_id, "relogged", relog.run_id, relog.superseded_run_ids)
    return outcome, relog


def relog(
    save_dirs: Sequence[str] = (),
    *,
    root: str | None = None,
    force: bool = False,
    diag: DiagBody | None = None,
    experiment: str | None = None,
    version: str | None = None,
    workers: int | None = None,
    serialize: Serializer | None = None,
    recorded_by: str | None = None,
) -> list[RelogOutcome]:
    """Relog save_dirs (and every save_dir under `root`) in parallel; unchanged ones are skipped.
    Returns one outcome per save_dir, in order: `relogged`, `skipped`, `disabled` or `failed`.

    `diag` is the body (default: the standard one), `version` names its code (default:
    `code_version(diag)`), `workers` defaults to `FLEXLOCK_RELOG_WORKERS`. With `recorded_by`,
    only the save_dirs whose run.lock was recorded by the main flow of that name are relogged:
    a root that several pipelines share is relogged pipeline by pipeline, each with its diag.

    Errors of one save_dir make its outcome `failed`, with the reason, and the others go on: its
    run.lock is missing, empty, corrupt or of an unknown schema version (with `recorded_by`
    too: every run.lock is read to filter); the body raises; MLflow refuses a request or stops
    answering midway; its lock stays taken past `FLEXLOCK_LOCK_TIMEOUT_S`.

    Errors of the whole batch are raised as a `FlexlockError` before any save_dir is relogged:
    a save_dir or root that is no readable location (`StorageError`), no save_dir found at all,
    an invalid setting, and a tracking server that does not answer at the start (`TrackingError`).

    Example:
        >>> relog(["/runs/a", "s3://bucket/runs/b"], force=False)  # doctest: +SKIP
        [RelogOutcome(save_dir='file:///runs/a', outcome='relogged', run_id='…', ...), ...]
        >>> [o.reason for o in relog(root="/runs") if o.outcome == "failed"]  # doctest: +SKIP
        ['file:///runs/c/run.lock is not valid YAML (truncated or corrupt?): ...']
    """
    found = list(find_records(root, (SWEEP_LOCK_FILENAME,))) if root else []
    sweep_roots = [url for url, name in found if name == SWEEP_LOCK_FILENAME]
    below = [url for url, name in found if name != SWEEP_LOCK_FILENAME]
    targets = list(dict.fromkeys([*map(storage.canonical_url, save_dirs), *below]))
    items: list[str | RunLock | RelogOutcome] = list(targets)
    if recorded_by is not None:
        loaded = [_load_or_failure(target) for target in targets]
        items = [i for i in loaded if not isinstance(i, RunLock) or _flow_name(i) == recorded_by]
    if not items and not sweep_roots:
        where = f"under {root}" if root else "given"
        by = f" recorded by {recorded_by!r}" if recorded_by is not None else ""
        raise FlexlockError(f"no save_dir with a run.lock{by} {where}: nothing to relog")
    body = diag or log_outputs
    version = version or code_version(body)
    connect()  # an unreachable tracking server stops the batch here, before any work

    def one(item: str | RunLock | RelogOutcome) -> RelogOutcome:
        if isinstance(item, RelogOutcome):
            return item
        started: list[str] = []
        try:
            return relog_one(
                item,
                body,
                force=force,
                experiment=experiment,
                version=version,
                serialize=serialize,
                on_run=started.append,
            )[0]
        except Exception as exc:  # noqa: BLE001 - one save_dir's failure is its outcome, not the batch's
            return _failed(item.logical_run_id if isinstance(item, RunLock) else item, exc, started)

    # Each task runs in a copy of the caller's context: Prefect's settings (the API to lock on)
    # and flow run live in context variables, which pool threads do not inherit.
    with ThreadPoolExecutor(max(1, min(workers or get_settings().relog_workers, len(items)))) as pool:
        outcomes = [f.result() for f in [pool.submit(copy_context().run, one, item) for item in items]]
    # Parents last: each adopts its trials' runs, just relogged (tracking/sweeps.py).
    return outcomes + [_relog_parent(url, force, experiment, serialize, recorded_by) for url in sweep_roots]


def _relog_parent(
    root: str, force: bool, experiment: str | None, serialize: Serializer | None, recorded_by: str | None
) -> RelogOutcome:
    try:
        if recorded_by is not None and SweepLock.load(root).flow != recorded_by:
            return RelogOutcome(root, "skipped")
        return relog_sweep(root, force=force, experiment=experiment, serialize=serialize)
    except Exception as exc:  # noqa: BLE001 - one sweep root's failure is its outcome, not the batch's
        return _failed(root, exc)


def _load_or_failure(save_dir: str) -> RunLock | RelogOutcome:
    try:
        return RunLock.load(save_dir)
    except Exception as exc:  # noqa: BLE001 - an unreadable run.lock is that save_dir's outcome
        return _failed(save_dir, exc)


def _failed(save_dir: str, exc: Exception, run_ids: Sequence[str] = ()) -> RelogOutcome:
    reason = failure_reason(exc)
    logger.warning("%s: relog failed: %s", save_dir, reason)
    return RelogOutcome(save_dir, "failed", run_ids[-1] if run_ids else None, reason=reason)


def _flow_name(lock: RunLock) -> str | None:
    return lock.prefect.flow_name if lock.prefect else None


def reconcile(
    save_dirs: Sequence[str] = (),
    *,
    stale_after_s: float | None = None,
    serialize: Serializer | None = None,
) -> list[ReconcileOutcome]:
    """Repair the chains of the given save_dirs (default: every logical run in MLflow); idempotent.
    Returns one outcome per logical run: `repaired` (with its repairs), `sound` or `failed`.

    A relog that died leaves its run RUNNING, or FINISHED without `flexlock.status` when it died
    after ending the run but before tagging it active. Under a lock that serialises (the Prefect
    lock) no relog can be in flight, so such runs are ended FAILED at once, and the previous
    active run stays active; without one only runs older than `stale_after_s` (default
    `FLEXLOCK_RECONCILE_STALE_AFTER_S`) are. Then each chain is rebuilt from its committed runs
    by end time.

    Errors of one logical run (MLflow refuses a request on its chain, its lock stays taken) make
    its outcome `failed`, with the reason, and the others are repaired. Errors of the whole batch
    are raised as a `FlexlockError` before any chain is touched: a save_dir that is no readable
    location, an invalid setting, a tracking server that does not answer or cannot list the
    experiments and logical runs.

    Example:
        >>> reconcile()  # doctest: +SKIP
        [ReconcileOutcome(logical_run_key='de961c6972ce12f6', outcome='repaired', repairs=[Repair(...)], ...)]
    """
    stale_after_s = get_settings().reconcile_stale_after_s if stale_after_s is None else stale_after_s
    wanted: dict[str, str | None] = {logical_run_key(url): url for url in map(storage.canonical_url, save_dirs)}
    tracking = connect()
    with tracking.errors():
        experiment_ids = all_experiment_ids(tracking.client)
        if not save_dirs:
            wanted = _all_logical_runs(tracking.client, experiment_ids)
    return [
        _reconcile_one(tracking, experiment_ids, key, save_dir, stale_after_s, serialize)
        for key, save_dir in wanted.items()
    ]


def _reconcile_one(
    tracking: Tracking,
    experiment_ids: list[str],
    key: str,
    save_dir: str | None,
    stale_after_s: float,
    serialize: Serializer | None,
) -> ReconcileOutcome:
    try:
        with (serialize or unserialized)(key) as locked, tracking.errors():
            runs = runs_of(tracking.client, experiment_ids, key)
            repairs = repair_chain(tracking.client, runs, stale_after_s=0 if locked else stale_after_s)
    except Exception as exc:  # noqa: BLE001 - one logical run's failure is its outcome, not the batch's
        reason = failure_reason(exc)
        logger.warning("%s: reconcile failed: %s", save_dir or key, reason)
        return ReconcileOutcome(key, "failed", reason=reason, save_dir=save_dir)
    return ReconcileOutcome(key, "repaired" if repairs else "sound", repairs, save_dir=save_dir)


def _all_logical_runs(client: MlflowClient, experiment_ids: list[str]) -> dict[str, str | None]:
    """Every logical run key on the server, sorted, with its save_dir as its runs name it."""
    found: dict[str, str | None] = {}
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=f"tags.`{LOGICAL_RUN_KEY}` LIKE '%'", max_results=1000, page_token=token
        )
        for run in page:
            key = run.data.tags[LOGICAL_RUN_KEY]
            found[key] = found.get(key) or run.data.tags.get(LOGICAL_RUN_ID)
        token = page.token
        if not token:
            return dict(sorted(found.items()))
