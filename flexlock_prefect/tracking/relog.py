"""Relogging run directories to MLflow (one, many, or all under a root) and repairing chains.

Both take the logical run's lock that the caller passes (`flexlock_prefect.relog` and
`reconcile` pass a Prefect global concurrency limit, when a Prefect API is configured), so any
number of processes, workers and deployments can relog and reconcile the same save_dirs at once
and still leave one active run and one chain per logical id.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Literal

import mlflow
from mlflow import MlflowClient

from flexlock_prefect import storage
from flexlock_prefect._version import __version__
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.lock import RunLock, find_save_dirs, logical_run_key
from flexlock_prefect.settings import get_settings
from flexlock_prefect.tracking.client import all_experiment_ids, connect, experiment_id
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.outputs import log_outputs, uses_fluent_run
from flexlock_prefect.tracking.record import experiment_name, mlflow_enabled
from flexlock_prefect.tracking.supersede import (
    Relog,
    Repair,
    current_active,
    linked_run,
    repair_chain,
    runs_of,
)
from flexlock_prefect.tracking.tags import DIAG_VERSION, LOCK_DIGEST, LOGICAL_RUN_KEY

logger = logging.getLogger(__name__)

DiagBody = Callable[[str, mlflow.ActiveRun], None]


@dataclass(frozen=True)
class RelogOutcome:
    save_dir: str
    outcome: Literal["relogged", "skipped", "disabled"]
    run_id: str | None = None
    superseded_run_ids: list[str] = field(default_factory=list)


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
    save_dir: str,
    diag: DiagBody = log_outputs,
    *,
    force: bool = False,
    experiment: str | None = None,
    version: str | None = None,
    serialize: Serializer | None = None,
) -> tuple[RelogOutcome, Relog | None]:
    """Relog one save_dir with `diag(save_dir, run)` as the body, unless it is up to date.

    The body's run is MLflow's fluent active run, as `mlflowlink` gives it, unless the body is
    marked `logs_through_client` (as the default body is): three requests fewer.
    """
    lock = RunLock.load(save_dir)
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
    with linked_run(lock, experiment, diag_version=version, serialize=serialize, fluent=uses_fluent_run(diag)) as relog:
        diag(body_save_dir(lock.logical_run_id), relog.run)
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

    `diag` is the body (default: the standard one), `version` names its code (default:
    `code_version(diag)`), `workers` defaults to `FLEXLOCK_RELOG_WORKERS`. With `recorded_by`,
    only the save_dirs whose run.lock was recorded by the main flow of that name are relogged:
    a root that several pipelines share is relogged pipeline by pipeline, each with its diag.

    Example:
        >>> relog(["/runs/a", "s3://bucket/runs/b"], force=False)  # doctest: +SKIP
        >>> relog(root="/runs")  # doctest: +SKIP
    """
    targets = list(dict.fromkeys([*map(storage.canonical_url, save_dirs), *(find_save_dirs(root) if root else [])]))
    if recorded_by is not None:
        targets = [t for t in targets if _flow_name(RunLock.load(t)) == recorded_by]
    if not targets:
        where = f"under {root}" if root else "given"
        by = f" recorded by {recorded_by!r}" if recorded_by is not None else ""
        raise FlexlockError(f"no save_dir with a run.lock{by} {where}: nothing to relog")
    body = diag or log_outputs
    version = version or code_version(body)

    def one(save_dir: str) -> RelogOutcome:
        return relog_one(save_dir, body, force=force, experiment=experiment, version=version, serialize=serialize)[0]

    # Each task runs in a copy of the caller's context: Prefect's settings (the API to lock on)
    # and flow run live in context variables, which pool threads do not inherit.
    with ThreadPoolExecutor(max(1, min(workers or get_settings().relog_workers, len(targets)))) as pool:
        return [f.result() for f in [pool.submit(copy_context().run, one, save_dir) for save_dir in targets]]


def _flow_name(lock: RunLock) -> str | None:
    return lock.prefect.flow_name if lock.prefect else None


def reconcile(
    save_dirs: Sequence[str] = (),
    *,
    stale_after_s: float | None = None,
    serialize: Serializer | None = None,
) -> list[Repair]:
    """Repair the chains of the given save_dirs (default: every logical run in MLflow); idempotent.

    A relog that died leaves its run RUNNING. Under a lock that serialises (the Prefect lock) no
    relog can be in flight, so such runs are ended FAILED at once; without one only runs older
    than `stale_after_s` (default `FLEXLOCK_RECONCILE_STALE_AFTER_S`) are. Then each chain is
    rebuilt from its finished runs by end time.

    Example:
        >>> reconcile()  # doctest: +SKIP
        [Repair(logical_run_key='de961c6972ce12f6', run_id='…', change='flexlock.status=deprecated')]
    """
    stale_after_s = get_settings().reconcile_stale_after_s if stale_after_s is None else stale_after_s
    tracking = connect()
    client = tracking.client
    with tracking.errors():
        experiment_ids = all_experiment_ids(client)
        keys = (
            [logical_run_key(storage.canonical_url(s)) for s in save_dirs]
            if save_dirs
            else _all_logical_run_keys(client, experiment_ids)
        )
        repairs: list[Repair] = []
        for key in sorted(set(keys)):
            with (serialize or unserialized)(key) as locked:
                runs = runs_of(client, experiment_ids, key)
                repairs += repair_chain(client, runs, stale_after_s=0 if locked else stale_after_s)
    return repairs


def _all_logical_run_keys(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    keys: set[str] = set()
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=f"tags.`{LOGICAL_RUN_KEY}` LIKE '%'", max_results=1000, page_token=token
        )
        keys |= {run.data.tags[LOGICAL_RUN_KEY] for run in page}
        token = page.token
        if not token:
            return sorted(keys)
