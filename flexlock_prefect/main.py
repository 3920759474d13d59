"""`locked_flow`: a Prefect flow that records what went into a run, runs it, and announces it.

Order of work, each step a Prefect task with its own name in the UI: the capture facets
(resolve-config → capture-code → capture-data → capture-environment → capture-lineage, in the
order of `capture.FACETS`) → write-run-lock → <compute> → record-result → publish-artifacts →
emit-event.

run.lock is written before the compute starts, so even a run killed mid-way leaves a record of
its inputs; the `result` section and the event follow once the compute ends, either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf
from prefect import Flow, Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run

from flexlock_prefect import artifacts, events, storage
from flexlock_prefect._user_flow import user_flow
from flexlock_prefect.capture import Capture, Facet, FlowRunRef, Step, capture_run
from flexlock_prefect.capture.config import ConfigSource
from flexlock_prefect.capture.data import file_digests
from flexlock_prefect.capture.facet import ProgressFactory, run_directly
from flexlock_prefect.concurrency import inputs_lock
from flexlock_prefect.exceptions import FlexlockError, RunLockError
from flexlock_prefect.lock import LOCK_FILENAME, RunLock, RunResult, find_save_dirs, utc_now
from flexlock_prefect.redact import Redactor

Compute = Callable[[DictConfig], Any]
_LOCKED = "flexlock_locked_run"


def locked_flow(
    fn: Compute | None = None,
    /,
    *,
    config: ConfigSource = None,
    data: Sequence[str] = (),
    repos: Mapping[str, str] | None = None,
    save_dir: str | None = None,
    skip_if_identical: bool = False,
    runs_root: str | None = None,
    **flow_kwargs: Any,
) -> Flow[..., str] | Callable[[Compute], Flow[..., str]]:
    """Turn `fn(cfg)` into a Prefect flow that records its run in `<save_dir>/run.lock`.

    The flow's parameters are `overrides` (OmegaConf dotlist, e.g. `["lr=0.1"]`) and `config`
    (a partial config merged over the defaults), so the UI, deployments and triggers can set any
    value; it returns the save_dir's URL. Any `prefect.flow` keyword (name, retries,
    task_runner, log_prints, …) is passed on.

    Args:
        config: defaults: a dataclass, a YAML path or a dict, with a `save_dir` key.
        data: config keys whose values are input paths or s3:// URLs, hashed into the record.
        repos: name → path of git repositories whose state is recorded.
        save_dir: a save_dir template that replaces the config's, e.g. `runs/${now:%Y%m%d-%H%M%S}`.
        skip_if_identical: return an existing completed run with the same fingerprint instead
            of computing again. The check and the compute hold one lock per inputs (with a
            Prefect API), so identical runs started together wait for the one that computes,
            up to `FLEXLOCK_LOCK_TIMEOUT_S`, and return its save_dir.
        runs_root: where identical runs are looked for (default: the save_dir's parent).

    Example:
        >>> @locked_flow(config=TrainConfig, data=["input_data"], repos={"code": "."})  # doctest: +SKIP
        ... def train(cfg) -> None:
        ...     fit(cfg.lr, cfg.input_data, cfg.save_dir)
        >>> save_dir = train(overrides=["lr=0.1"])  # doctest: +SKIP
    """

    def decorate(compute: Compute) -> Flow[..., str]:
        locked = _LockedRun(compute, config, data, repos or {}, save_dir, skip_if_identical, runs_root)

        def run(overrides: list[str] | None = None, config: dict[str, Any] | None = None) -> str:
            return locked.run(list(overrides or []), dict(config or {}))

        setattr(run, _LOCKED, locked)  # on the function: copies made by `with_options` share it
        # The flow carries the user's names (not `__wrapped__`, whose signature Prefect would
        # read), and deploys from the name it is bound to (`_user_flow`).
        return user_flow(compute, run, flow_kwargs)

    return decorate(fn) if fn is not None else decorate


def locked_run_of(made: Flow[..., Any]) -> _LockedRun:
    """What a `locked_flow` was decorated with (config, data, repos): a sweep captures the inputs
    of its trials with it, as the flow will, before running them.

    Raises:
        FlexlockError: `made` is not a `locked_flow`.
    """
    locked = getattr(getattr(made, "fn", None), _LOCKED, None)
    if locked is None:
        name = made.name if isinstance(made, Flow) else repr(made)
        raise FlexlockError(f"{name} is not a locked_flow: decorate it with `@locked_flow(config=...)`")
    return locked


@cache
def _facet_task(facet: Facet) -> Task[[Capture], None]:
    """The Prefect task of one capture facet, named as the facet (made once per facet)."""
    return task(name=facet.name, cache_policy=NO_CACHE, retries=facet.retries, retry_delay_seconds=1)(facet.collect)


def run_facet_as_task(facet: Facet, capture: Capture) -> None:
    """`capture_run`'s step inside a flow run: each facet is a task run of its own in the UI."""
    _facet_task(facet)(capture)


@task(name="write-run-lock", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def write_lock(lock: RunLock) -> str:
    return lock.save()


@task(name="record-result", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_result(lock: RunLock, started_at: str, started: float, error: str | None) -> RunLock:
    """Add `result` (status, times, digests of the files the run wrote) and rewrite run.lock."""
    outputs = file_digests(lock.logical_run_id, exclude=_is_lock_file) if storage.exists(lock.logical_run_id) else {}
    finished = lock.with_result(
        RunResult(
            status="failed" if error else "completed",
            started_at=started_at,
            finished_at=utc_now(),
            duration_s=round(time.monotonic() - started, 3),
            outputs=outputs,
            error=error,
        )
    )
    finished.save()
    return finished


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(lock: RunLock) -> None:
    artifacts.publish_lock(lock)


@task(name="emit-event", cache_policy=NO_CACHE)
def emit_event(lock: RunLock) -> None:
    events.emit_run_finished(lock)


def _is_lock_file(relpath: str) -> bool:
    """run.lock itself and the temporary files of its atomic writes are not outputs."""
    return relpath == LOCK_FILENAME or relpath.startswith(f".{LOCK_FILENAME}.")


class _LockedRun:
    """What one `locked_flow` knows at decoration time; `run` is the body of every flow run."""

    def __init__(
        self,
        compute: Compute,
        config: ConfigSource,
        data: Sequence[str],
        repos: Mapping[str, str],
        save_dir: str | None,
        skip_if_identical: bool,
        runs_root: str | None,
    ) -> None:
        self.compute = task(name=compute.__name__, cache_policy=NO_CACHE)(compute)
        self.config = config
        self.data = list(data)
        self.repos = dict(repos)
        self.save_dir = save_dir
        self.skip_if_identical = skip_if_identical
        self.runs_root = runs_root

    def run(self, overrides: list[str], partial: dict[str, Any]) -> str:
        logger = get_run_logger()
        started_at, started = utc_now(), time.monotonic()
        cfg, lock = self.capture(
            overrides,
            partial,
            flow_run=FlowRunRef(flow_run.id, flow_run.flow_name, deployment.name),
            progress=artifacts.progress_artifact,
            step=run_facet_as_task,
        )
        if not self.skip_if_identical:
            return self._compute(cfg, lock, started_at, started)
        # Check and compute under one lock, so of identical runs started together one computes
        # and the others wait for it, then return its save_dir.
        with inputs_lock(self._runs_root(lock), lock.fingerprint):
            if previous := self._identical_run(lock):
                logger.info(
                    "inputs identical to the completed run %s (fingerprint %s): not recomputing",
                    previous,
                    lock.fingerprint[:12],
                )
                artifacts.publish_skipped(previous, lock.fingerprint)
                return previous
            return self._compute(cfg, lock, started_at, started)

    def capture(
        self,
        overrides: Sequence[str],
        partial: Mapping[str, Any],
        *,
        flow_run: FlowRunRef | None = None,
        progress: ProgressFactory | None = None,
        step: Step = run_directly,
    ) -> tuple[DictConfig, RunLock]:
        """The resolved config and the unsaved record of one run with these parameters; writes
        nothing to a save_dir, so a sweep can key its trials on their inputs before running them."""
        return capture_run(
            self.config,
            overrides=overrides,
            partial=partial,
            save_dir=self.save_dir,
            data=self.data,
            repos=self.repos,
            flow_run=flow_run,
            progress=progress,
            step=step,
        )

    def _compute(self, cfg: DictConfig, lock: RunLock, started_at: str, started: float) -> str:
        """Write run.lock, run the user's compute, record its result."""
        logger = get_run_logger()
        write_lock(lock)
        logger.info("run.lock written to %s (fingerprint %s)", lock.logical_run_id, lock.fingerprint[:12])
        redactor = Redactor.from_settings()
        secrets = redactor.secret_values(OmegaConf.to_container(cfg, resolve=True))
        try:
            self.compute(cfg)
        except BaseException as exc:
            error = redactor.scrub(f"{type(exc).__name__}: {exc}", secrets)
            self._finish(lock, started_at, started, error)
            raise
        self._finish(lock, started_at, started, None)
        return lock.logical_run_id

    @staticmethod
    def _finish(lock: RunLock, started_at: str, started: float, error: str | None) -> None:
        finished = record_result(lock, started_at, started, error)
        publish_artifacts(finished)
        emit_event(finished)

    def _runs_root(self, lock: RunLock) -> str:
        return self.runs_root or lock.logical_run_id.rsplit("/", 1)[0]

    def _identical_run(self, lock: RunLock) -> str | None:
        """A completed run under the runs root whose inputs had the same fingerprint."""
        for save_dir in find_save_dirs(self._runs_root(lock)):
            if save_dir == lock.logical_run_id:
                continue
            try:
                candidate = RunLock.load(save_dir)
            except RunLockError:
                continue
            if (
                candidate.fingerprint == lock.fingerprint
                and candidate.result
                and candidate.result.status == "completed"
            ):
                return save_dir
        return None
