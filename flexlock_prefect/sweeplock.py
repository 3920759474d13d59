"""`sweep.lock`: the record of a sweep at its root, and what each trial's save_dir says of it.

YAML, rewritten atomically (`storage.write_atomic`) when the sweep starts and each time a trial
finishes. It holds the study key with its inputs (`base`, `space`: the key can be recomputed
from the file, and is checked on load), the metric that ranks the trials, every trial with its
key, values, save_dir and status, and the best trial. Record side: no Prefect, no MLflow.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from flexlock_prefect import storage
from flexlock_prefect.exceptions import RunLockError, StorageError, StorageNotFound, SweepError
from flexlock_prefect.lock import RunLock, utc_now, validate_record
from flexlock_prefect.metrics import read_metrics
from flexlock_prefect.study import Study, Trial, study_key

logger = logging.getLogger(__name__)

SWEEP_SCHEMA_VERSION = 1
SWEEP_LOCK_FILENAME = "sweep.lock"
Status = Literal["pending", "running", "completed", "failed"]
Mode = Literal["max", "min"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialRecord(_Record):
    """One trial in sweep.lock.

    `reused` says its result comes from an earlier sweep run (a completed run.lock with the
    trial's inputs was already there); `fingerprint` is its run.lock's, equal to the key unless
    the inputs changed between planning and running (code edited meanwhile, another checkout on
    a worker): such a trial is run again next time.
    """

    trial_key_hash: str
    values: dict[str, Any]
    save_dir: str
    status: Status = "pending"
    reused: bool = False
    fingerprint: str | None = None
    flow_run_id: str | None = None
    metric_value: float | None = None
    error: str | None = None

    @classmethod
    def planned(cls, trial: Trial) -> TrialRecord:
        return cls(trial_key_hash=trial.key, values=trial.values, save_dir=trial.save_dir)


class BestTrial(_Record):
    trial_key_hash: str
    save_dir: str
    values: dict[str, Any]
    metric: str
    value: float


class SweepLock(_Record):
    """The parsed content of one sweep.lock.

    Example:
        >>> lock = SweepLock.load("sweeps/c")  # doctest: +SKIP
        >>> lock.study_key_hash, [t.status for t in lock.trials], lock.best  # doctest: +SKIP
    """

    flexlock: int = SWEEP_SCHEMA_VERSION
    root: str
    study_key_hash: str
    flow: str
    created_at: str
    updated_at: str
    base: dict[str, Any]
    space: dict[str, Any]
    metric: str | None = None
    mode: Mode = "max"
    n_trials: int | None = None
    """Set for trials asked of a sampler (`optuna_trials.py`): the completed trials wanted."""
    trials: list[TrialRecord]
    best: BestTrial | None = None

    @classmethod
    def create(
        cls, root: str, study: Study, flow: str, metric: str | None, mode: Mode, n_trials: int | None = None
    ) -> SweepLock:
        now = utc_now()
        return cls(
            root=storage.canonical_url(root),
            study_key_hash=study.key,
            flow=flow,
            created_at=now,
            updated_at=now,
            base=study.base,
            space=study.space,
            metric=metric,
            mode=mode,
            n_trials=n_trials,
            trials=[TrialRecord.planned(trial) for trial in study.trials],
        )

    def count(self, status: Status) -> int:
        return sum(trial.status == status for trial in self.trials)

    def with_trial(self, record: TrialRecord) -> SweepLock:
        """This record with one trial replaced (by key) or added, and the best trial chosen again."""
        trials = [record if t.trial_key_hash == record.trial_key_hash else t for t in self.trials]
        if record not in trials:
            trials.append(record)
        return self.model_copy(update={"trials": trials, "updated_at": utc_now(), "best": self._best(trials)})

    def _best(self, trials: list[TrialRecord]) -> BestTrial | None:
        """The completed trial with the best metric value; of equal values, the first listed."""
        scored = [t for t in trials if t.status == "completed" and t.metric_value is not None]
        if not self.metric or not scored:
            return None
        sign = 1 if self.mode == "max" else -1
        best = max(scored, key=lambda t: sign * t.metric_value)  # max keeps the first of equals
        return BestTrial(
            trial_key_hash=best.trial_key_hash,
            save_dir=best.save_dir,
            values=best.values,
            metric=self.metric,
            value=best.metric_value,
        )

    def save(self) -> str:
        url = storage.join(self.root, SWEEP_LOCK_FILENAME)
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
        storage.write_atomic(url, text.encode())
        return url

    @classmethod
    def load(cls, root: str) -> SweepLock:
        """Read and validate `<root>/sweep.lock`.

        Raises:
            SweepError: missing, not YAML, of an unknown schema version, incomplete, or its study
                key does not match its base and space (edited by hand).
        """
        url = storage.join(storage.canonical_url(root), SWEEP_LOCK_FILENAME)
        try:
            data = yaml.safe_load(storage.read_bytes(url))
        except StorageNotFound as exc:
            raise SweepError(f"no sweep.lock in {root}: {exc}") from exc
        except (StorageError, yaml.YAMLError) as exc:
            raise SweepError(f"cannot read {url}: {' '.join(str(exc).split())}") from exc
        lock = validate_record(cls, data, url, SWEEP_LOCK_FILENAME, SWEEP_SCHEMA_VERSION, SweepError)
        if study_key(lock.base, lock.space) != lock.study_key_hash:
            raise SweepError(f"{url}: the study key does not match the recorded base and space (edited by hand?)")
        return lock


class SweepRecord:
    """The sweep.lock of a sweep in progress: every change rewrites the file atomically. Trials
    finish in threads, so changes are serialised here, and each write holds every change so far."""

    def __init__(self, lock: SweepLock) -> None:
        self._guard = threading.Lock()
        self._lock = lock
        lock.save()

    @property
    def lock(self) -> SweepLock:
        return self._lock

    def update(self, record: TrialRecord) -> SweepLock:
        with self._guard:
            self._lock = self._lock.with_trial(record)
            self._lock.save()
            return self._lock


def reusable(trial: Trial, metric: str | None) -> TrialRecord | None:
    """The trial as completed by an earlier run, when its save_dir holds a completed run.lock with
    the trial's inputs (fingerprint = trial key); None when it must run (missing, failed, other inputs)."""
    try:
        lock = RunLock.load(trial.save_dir)
    except RunLockError:
        return None
    if lock.fingerprint != trial.key or not lock.result or lock.result.status != "completed":
        return None
    return finished(trial, lock, metric, lock.prefect.flow_run_id if lock.prefect else None, reused=True)


def outcome(trial: Trial, metric: str | None, flow_run_id: str | None, error: str | None) -> TrialRecord:
    """What a trial's run left: its run.lock's status, fingerprint and metric; `error` (the flow
    run's) when the run failed before it recorded one."""
    try:
        lock = RunLock.load(trial.save_dir)
    except RunLockError as exc:
        reason = error or f"the trial's run left no readable run.lock ({exc})"
        return TrialRecord.planned(trial).model_copy(
            update={"status": "failed", "flow_run_id": flow_run_id, "error": reason}
        )
    return finished(trial, lock, metric, flow_run_id, error)


def finished(
    trial: Trial,
    lock: RunLock,
    metric: str | None,
    flow_run_id: str | None,
    error: str | None = None,
    reused: bool = False,
) -> TrialRecord:
    """The trial as its run.lock records it (failed, whatever the run.lock says, with an `error`)."""
    completed = lock.result is not None and lock.result.status == "completed" and error is None
    failure = (lock.result.error if lock.result else None) or error or "the run ended without a result"
    return TrialRecord.planned(trial).model_copy(
        update={
            "status": "completed" if completed else "failed",
            "reused": reused,
            "fingerprint": lock.fingerprint,
            "flow_run_id": flow_run_id,
            "metric_value": _metric_value(lock.save_dir, metric) if completed and metric else None,
            "error": None if completed else failure,
        }
    )


def _metric_value(save_dir: str, metric: str) -> float | None:
    """The trial's value of `metric`; None, said in the log, when its metrics.json lacks it."""
    try:
        metrics = read_metrics(save_dir)
    except ValueError as exc:  # not JSON: the trial still completed, it just cannot be ranked
        logger.warning("cannot read the metrics.json of %s: %s", save_dir, exc)
        return None
    if metric not in metrics:
        logger.warning("%s has no metric %r in metrics.json (it has %s)", save_dir, metric, sorted(metrics) or "none")
    return metrics.get(metric)
