"""`trace`: what produced a registered model version, and who let it into each state.

One call follows the chain a person asks about when a model misbehaves: the version (its
aliases, flexlock tags and lifecycle history), the MLflow run it was registered from and the
active run of that logical run, the run.lock of the save_dir (config highlights, each repo with
the command that restores its code, data, lockfiles) and the upstream runs its data came from,
recursively. A trace is what one reads when something looks wrong, so what cannot be read (a
deleted run, a save_dir gone, a run.lock that no longer loads, a version without a run, an
upstream missing, a lineage cycle) is a problem in the trace, never an exception. A bad
reference, an unknown model, version or alias (`LifecycleError`) and an unreachable or refusing
MLflow server (`TrackingError`) still raise: there is nothing to trace.

It knows MLflow and never Prefect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.provenance import Check, Record, checks, load_lock, lock_record
from flexlock_prefect.tracking import model_state, registry
from flexlock_prefect.tracking.client import Tracking, all_experiment_ids, check_tracking_server, run_url
from flexlock_prefect.tracking.registry import Move
from flexlock_prefect.tracking.supersede import active_runs
from flexlock_prefect.tracking.tags import (
    APPROVED_AT,
    APPROVED_BY,
    LIFECYCLE,
    LOCK_DIGEST,
    LOGICAL_RUN_ID,
    LOGICAL_RUN_KEY,
    MODEL_DIGEST,
    SEED_TAG_KEYS,
    STATUS,
)

__all__ = ["Trace", "parse_ref", "trace"]

VERSION_TAGS = (LIFECYCLE, APPROVED_BY, APPROVED_AT, LOGICAL_RUN_KEY, LOCK_DIGEST, MODEL_DIGEST)
"""The version tags a trace shows, when the version has them (the lifecycle history is parsed apart)."""


@dataclass(frozen=True)
class VersionRecord:
    """The registered version: the aliases it holds, its flexlock tags and its moves, oldest first."""

    model: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    tags: dict[str, str]
    history: tuple[Move, ...]


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run of the logical run: MLflow's status and flexlock's (`active`, `deprecated`)."""

    run_id: str
    status: str
    flexlock_status: str | None
    deleted: bool
    lock_digest: str | None
    url: str | None


@dataclass(frozen=True)
class LogicalRun:
    """The save_dir the version's run logged, that run, and the logical run's active run now."""

    save_dir: str | None
    key: str | None
    version_run: RunRecord | None
    active_run: RunRecord | None


@dataclass(frozen=True)
class Trace:
    """The whole chain of one model version; `checks` is None unless it was traced with `verify`."""

    version: VersionRecord
    logical_run: LogicalRun
    record: Record | None
    problems: tuple[str, ...]
    checks: tuple[Check, ...] | None = None

    @property
    def verified(self) -> bool:
        """Every check passed (trivially True when not verified)."""
        return all(check.ok for check in self.checks or ())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: what `flexlock-prefect trace --json` prints. Moves read as in the
        `flexlock.lifecycle_history` tag (`from`, `to`, `at`, `by`, `comment`, `flow_run_id`)."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Move):
        return value.to_entry()
    if dataclasses.is_dataclass(value):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def parse_ref(ref: str | tuple[str, str]) -> tuple[str, str | None, str | None]:
    """`(model, alias, version)` of `MODEL@ALIAS`, `models:/MODEL@ALIAS`, `models:/MODEL/VERSION`
    or `(MODEL, VERSION)`; a LifecycleError for anything else.

    Example:
        >>> parse_ref("models:/churn@prod"), parse_ref(("churn", "3"))
        (('churn', 'prod', None), ('churn', None, '3'))
    """
    if isinstance(ref, tuple):
        model, version = ref
        if "@" in model or model.startswith("models:/"):
            raise LifecycleError(f"give MODEL VERSION or MODEL@ALIAS, not both ({model!r} and version {version!r})")
        return model, None, str(version)
    body = ref.removeprefix("models:/")
    model, alias, version = body, None, None
    if "@" in body:
        model, alias = body.rsplit("@", 1)
    elif body != ref and "/" in body:
        model, version = body.rsplit("/", 1)
    if not model or not (alias or version):
        raise LifecycleError(
            f"cannot read the model reference {ref!r}: give MODEL@ALIAS, models:/MODEL@ALIAS or MODEL VERSION"
        )
    return model, alias, version


def trace(model_ref: str | tuple[str, str], client: MlflowClient | None = None, verify: bool = False) -> Trace:
    """Trace a version from the registry back to its code and data, and up its lineage.

    With `verify`, the version's own record is checked now, item by item (`verify_lock`: data
    re-hashed, code objects looked up, the run.lock against the version's lock digest); a record
    that cannot be read is a failed check then. Upstream records are not re-hashed: the data
    they made are among the inputs that are.

    Example:
        >>> found = trace("churn@prod", verify=True)  # doctest: +SKIP
        >>> found.version.tags["flexlock.approved_by"], found.record.code[0].restore, found.verified  # doctest: +SKIP
        ('alice', 'git checkout refs/flexlock/snapshots/9f1c...', True)
    """
    model, alias, number = parse_ref(model_ref)
    models = model_state.connect(client)
    found = registry.resolve(model, alias, models.client) if alias else model_state.model_version(models, model, number)
    version = str(found.version)
    runs = Tracking(models.client.tracking_uri, models.client)  # runs live on the tracking server
    check_tracking_server(runs.uri)
    problems: list[str] = []
    run = _version_run(runs, found, problems)
    held = registry.aliases(model, models.client)
    record = VersionRecord(
        model,
        version,
        tuple(sorted(a for a, v in held.items() if v == version)),
        found.run_id or None,
        {key: found.tags[key] for key in VERSION_TAGS if key in found.tags},
        tuple(m for m in registry.history(model, models.client) if m.version == version),
    )
    expected = found.tags.get(LOCK_DIGEST) or (run.data.tags.get(LOCK_DIGEST) if run else None)
    logical = _logical_run(runs, found, run, expected, problems)
    lock, problem = load_lock(logical.save_dir) if logical.save_dir else (None, None)
    if problem:
        problems.append(problem)
    if lock is not None and expected and lock.digest != expected:
        problems.append(
            f"the run.lock in its save_dir has digest {lock.digest}, not the {expected} the version was logged from"
        )
    traced = lock_record(lock, SEED_TAG_KEYS) if lock else None
    return Trace(record, logical, traced, tuple(problems), checks(lock, expected) if verify else None)


def _version_run(runs: Tracking, found: ModelVersion, problems: list[str]) -> Run | None:
    """The version's MLflow run, or None with the reason among `problems`; a deleted run is
    still returned (its tags name the save_dir), with a problem saying it is deleted."""
    if not found.run_id:
        problems.append("the version was registered without an MLflow run")
        return None
    try:
        with model_state.mlflow_errors(
            runs, f"MLflow run {found.run_id}", missing=f"its MLflow run {found.run_id} is gone"
        ):
            run = runs.client.get_run(found.run_id)
    except LifecycleError as exc:
        problems.append(str(exc))
        return None
    if run.info.lifecycle_stage == "deleted":
        problems.append(f"its MLflow run {found.run_id} is deleted")
    return run


def _logical_run(
    runs: Tracking, found: ModelVersion, run: Run | None, expected: str | None, problems: list[str]
) -> LogicalRun:
    """The save_dir and the logical run's active run, searched by key on the whole server like
    `supersede.current_active`, but without needing the run.lock (the save_dir may be gone)."""
    save_dir = run.data.tags.get(LOGICAL_RUN_ID) if run else None
    if run and not save_dir:
        problems.append(f"its MLflow run {run.info.run_id} has no flexlock run record (no {LOGICAL_RUN_ID} tag)")
    key = (
        found.tags.get(LOGICAL_RUN_KEY)
        or (run.data.tags.get(LOGICAL_RUN_KEY) if run else None)
        or (logical_run_key(save_dir) if save_dir else None)
    )
    active = None
    if key:
        with runs.errors():
            found_active = active_runs(runs.client, all_experiment_ids(runs.client), key)
        active = found_active[0] if found_active else None
        if active is None:
            problems.append(f"its logical run {key} has no active MLflow run")
        elif expected and active.data.tags.get(LOCK_DIGEST) != expected:
            problems.append(
                f"the active run {active.info.run_id} of its logical run was logged from another run.lock "
                f"(digest {active.data.tags.get(LOCK_DIGEST)}, the version's {expected})"
            )
    return LogicalRun(save_dir, key, _run_record(runs, run), _run_record(runs, active))


def _run_record(runs: Tracking, run: Run | None) -> RunRecord | None:
    if run is None:
        return None
    info = run.info
    return RunRecord(
        info.run_id,
        info.status,
        run.data.tags.get(STATUS),
        info.lifecycle_stage == "deleted",
        run.data.tags.get(LOCK_DIGEST),
        run_url(runs.uri, info.run_id, info.experiment_id),
    )
