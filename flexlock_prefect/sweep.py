"""★ `sweep`: a Prefect flow that runs one trial of a `locked_flow` per point of a search space.

Order of work: plan-trials (capture each point's inputs as the flow will, writing nothing, and
key the study and its trials: `study.py`) → write sweep.lock (`sweeplock.py`) → reuse the
trials whose save_dir holds a completed run.lock with their inputs → run the others, at most
`max_parallel` at once → rank them by `metric` → log the root's MLflow parent run (`tracking/sweeps.py`) → emit
`flexlock.sweep.completed`.

A trial is an ordinary main run of the flow, with `save_dir=<root>/trial-<16 hex of its key>`
and its values in the flow's `config` parameter, so it records, publishes and announces itself
like any other (a pipeline's diag logs it). By default trials run as subflows in threads of the
sweep's process; with `deployment="train/train"` each is a flow run of that deployment
(`run_deployment`), which the deployment's workers share. A failed trial is recorded and the
others go on; the sweep ends Failed only when every trial failed, or at the first failure with
`fail_fast`. One sweep at a time works in a root: a Prefect lock named after the root.

The sweep.lock, a table artifact of the trials (a version per finished trial) and a progress
artifact say how far it got.
"""

# No `from __future__ import annotations`: a served deployment's runner pickles the flow by value
# when its module is "local" (an editable install, say: `prefect.bundles`), keeping only the names
# the code uses, so the annotations Prefect validates the parameters with must be objects already.
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import copy_context
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run as current_run
from prefect.states import State

from flexlock_prefect import artifacts, events, storage
from flexlock_prefect._user_flow import load_entrypoint
from flexlock_prefect.concurrency import exclusive
from flexlock_prefect.credentials import mlflow_credentials
from flexlock_prefect.diag import relog_sweep
from flexlock_prefect.exceptions import FlexlockError, SweepError, TrialsFailed
from flexlock_prefect.lock import logical_run_key, save_dir_name
from flexlock_prefect.main import locked_run_of
from flexlock_prefect.optuna_trials import ASKED_BY, OptunaTrials, study_mode
from flexlock_prefect.redact import Redactor
from flexlock_prefect.settings import get_settings
from flexlock_prefect.study import (
    CaptureInputs,
    Space,
    Study,
    Trial,
    TrialPlanner,
    check_overrides,
    plan_study,
    trial_partial,
)
from flexlock_prefect.sweeplock import Mode, SweepLock, SweepRecord, TrialRecord, outcome, reusable

RunTrial = Callable[[Trial, dict[str, Any]], tuple[str | None, str | None]]
"""Runs one trial with the flow's parameters; returns its flow run id and, if it failed, why."""


def _run_name() -> str:
    """`sweep-<flow>-<root's name>`: the UI shows the flow parameter only as `<Flow>` (or its
    entrypoint, whose last name is the flow's variable)."""
    parameters = current_run.parameters
    swept = parameters.get("flow")
    flow_name = (
        swept.rpartition(":")[2].rpartition(".")[2] if isinstance(swept, str) else getattr(swept, "name", "flow")
    )
    name = f"sweep-{flow_name}"
    return f"{name}-{save_dir_name(str(parameters['root']))}" if parameters.get("root") else name


@flow(
    name="sweep",
    flow_run_name=_run_name,
    description="Run a locked flow once per point of a search space, under one root.",
)
def sweep(
    flow: Flow[..., Any] | str,
    grid: dict[str, list[Any]] | None = None,
    root: str | None = None,
    points: list[dict[str, Any]] | None = None,
    distributions: dict[str, list[Any]] | None = None,
    n: int | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
    metric: str | None = None,
    mode: Mode | None = None,
    max_parallel: int | None = None,
    deployment: str | None = None,
    fail_fast: bool = False,
    study: Any = None,
    n_trials: int | None = None,
) -> SweepLock:
    """Run `flow` (a `locked_flow`) once per point, each trial in `<root>/trial-<key>`; returns
    the final sweep.lock. Completed trials with unchanged inputs are not run again.

    Args:
        flow: the locked flow of the trials, or its entrypoint (`path/to/file.py:NAME` or
            `package.module.NAME`, loaded in the sweep's process): a deployment of `sweep` takes
            the flow that way, as a JSON parameter.
        grid: dotted config key → values; one trial per combination.
        root: the sweep root (local path or s3:// URL): sweep.lock and every trial's save_dir.
        points: instead of a grid, the trials' values, e.g. `[{"model.C": 0.1, "seed": 0}, …]`.
        distributions: instead, key → `("loguniform", 1e-4, 1e-1)`, `("uniform", low, high)`,
            `("int", low, high)` or `("choice", [options])`; `n` draws from `random.Random(seed)`.
        overrides, config: the flow's parameters every trial starts from (no swept key).
        metric, mode: the key of `metrics.json` that ranks the trials (`max`, the default, or
            `min`; with `study`, its direction).
        max_parallel: trials at once (default `FLEXLOCK_SWEEP_MAX_PARALLEL`).
        deployment: run each trial as a flow run of this deployment (`flow/name`) instead of a subflow.
        fail_fast: start no trial after one failed, and end Failed.
        study: an `optuna.Study` that asks each point in `distributions` and is told each
            trial's `metric` (the extra `optuna`; see `optuna_trials.py`).
        n_trials: with `study`, the completed trials the root should hold.

    Example:
        >>> result = sweep(train, grid={"model.C": [0.1, 1, 10], "seed": [0, 1]}, root="sweeps/c",
        ...                metric="roc_auc")  # doctest: +SKIP
        >>> result.best.save_dir, result.study_key_hash  # doctest: +SKIP
    """
    if isinstance(flow, str):
        flow = load_entrypoint(flow, "the flow to sweep")
    if root is None:
        raise SweepError("a sweep needs a root: the directory of its sweep.lock and its trials' save_dirs")
    if (study is None) != (n_trials is None) or (n_trials is not None and n_trials < 1):
        raise SweepError("an Optuna sweep needs both study and n_trials >= 1, the completed trials wanted")
    if study is not None and not metric:
        raise SweepError("an Optuna sweep needs metric: the metrics.json key told to the study")
    asked_by = ASKED_BY if study is not None else None
    space = Space.of(grid=grid, points=points, distributions=distributions, n=n, seed=seed, asked_by=asked_by)
    mode = study_mode(study, mode) if study is not None else mode or "max"
    base_overrides = list(overrides or [])
    check_overrides(space, base_overrides)
    planner = TrialPlanner.of(root, trial_capture(flow, base_overrides), config)
    run_trial = _deployment_runner(deployment, flow.name) if deployment else _subflow_runner(flow)
    with exclusive(f"flexlock-sweep-{logical_run_key(planner.root)}"):
        planned = plan_trials(space, planner)
        if study is None:
            record = SweepRecord(SweepLock.create(planner.root, planned, flow.name, metric, mode))
            trials, told = _to_run(planned, record), None
        else:
            asked = OptunaTrials.start(study, space, planner, planned, flow.name, metric, mode, n_trials)
            record, trials, told = asked.record, iter(asked), asked.tell
        _run(trials, record, run_trial, base_overrides, planner.base_config, max_parallel, fail_fast, told)
    log_parent(record.lock)
    return _conclude(record.lock, fail_fast)


def trial_capture(trial_flow: Flow[..., Any], overrides: Sequence[str]) -> CaptureInputs:
    """How `trial_flow` (a `locked_flow`) will capture a trial's inputs with these overrides.

    Raises:
        FlexlockError: the flow is not a `locked_flow`.
    """
    locked = locked_run_of(trial_flow)
    return lambda partial: locked.capture(overrides, partial)[1]


@task(name="plan-trials", cache_policy=NO_CACHE)
def plan_trials(space: Space, planner: TrialPlanner) -> Study:
    study = plan_study(space, planner)
    trials = f"trials asked of {space.asked_by}" if space.asked else f"{len(study.trials)} trials"
    get_run_logger().info("study %s: %s under %s (%s)", study.key[:12], trials, planner.root, ", ".join(space.keys))
    return study


def _to_run(study: Study, record: SweepRecord) -> Iterator[Trial]:
    """The planned trials that must run: those completed with the same inputs are recorded as reused."""
    todo = []
    for trial in study.trials:
        if done := reusable(trial, record.lock.metric):
            record.update(done)
        else:
            todo.append(trial)
    get_run_logger().info(
        "%d trials already completed with the same inputs; %d to run", len(study.trials) - len(todo), len(todo)
    )
    return iter(todo)


def _run(
    trials: Iterator[Trial],
    record: SweepRecord,
    run_trial: RunTrial,
    overrides: list[str],
    base_config: Mapping[str, Any],
    max_parallel: int | None,
    fail_fast: bool,
    told: Callable[[TrialRecord], None] | None = None,
) -> None:
    """Run `trials` `max_parallel` at a time (taking the next only when one may start), record
    each as it finishes and pass it to `told`."""
    logger = get_run_logger()
    metric = record.lock.metric
    progress = artifacts.publish_sweep(record.lock)
    redactor = Redactor.from_settings()

    def one(trial: Trial) -> TrialRecord:
        record.update(TrialRecord.planned(trial).model_copy(update={"status": "running"}))
        partial = trial_partial(trial.point, trial.save_dir, base_config)
        try:
            flow_run_id, error = run_trial(trial, {"overrides": overrides, "config": partial})
        except Exception as exc:  # the run could not be started or followed: this trial failed, not the sweep
            flow_run_id, error = None, f"{type(exc).__name__}: {exc}"
        if error:
            error = redactor.scrub(" ".join(error.split()), redactor.secret_values(partial))
        return outcome(trial, metric, flow_run_id, error)

    workers = max_parallel or get_settings().sweep_max_parallel
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flexlock-trial") as pool:
        # Submitted one by one as others finish, so that after a failure with `fail_fast` no
        # further trial starts (a queue of submitted trials would already be on its way).
        running: set[Future[TrialRecord]] = set()
        stop = False
        while True:
            while not stop and len(running) < workers and (trial := next(trials, None)):
                running.add(pool.submit(copy_context().run, one, trial))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                reason = f": {result.error}" if result.error else ""
                logger.info("%s %s%s", save_dir_name(result.save_dir), result.status, reason)
                artifacts.publish_sweep(record.update(result), progress)
                if told:
                    told(result)
                stop = stop or (fail_fast and result.status == "failed")


@task(name="log-sweep-parent", cache_policy=NO_CACHE)
def log_parent(lock: SweepLock) -> str | None:
    """Relog the root as the sweep's MLflow parent run, which adopts the trials' active runs
    (`tracking/sweeps.py`); returns its id. Only with `MLFLOW_TRACKING_URI` set (a sweep does not
    make a local MLflow store of its own) and `mlflow.enabled` not false. A failure is a warning:
    the trials are done, and `relog(root=…)` logs the parent later."""
    logger = get_run_logger()
    settings = lock.base.get("config", {}).get("mlflow")
    if not os.environ.get("MLFLOW_TRACKING_URI") or (isinstance(settings, dict) and settings.get("enabled") is False):
        logger.info("no MLFLOW_TRACKING_URI (or mlflow.enabled is false): no parent run logged")
        return None
    try:
        with mlflow_credentials():
            outcome = relog_sweep(lock.root)
    except FlexlockError as exc:
        logger.warning("the sweep's parent run was not logged (relog the root later): %s", exc)
        return None
    logger.info("sweep parent run %s (%s)", outcome.run_id, outcome.outcome)
    return outcome.run_id


def _conclude(lock: SweepLock, fail_fast: bool) -> SweepLock:
    """Say how the sweep ended: Failed when no trial completed, or one failed with `fail_fast`."""
    logger = get_run_logger()
    failed, completed = lock.count("failed"), lock.count("completed")
    where = storage.join(lock.root, "sweep.lock")
    if lock.metric and lock.best is None and completed:
        logger.warning("no completed trial has the metric %r in its metrics.json: no best trial", lock.metric)
    if completed == 0 or (fail_fast and failed):
        raise TrialsFailed(
            f"{failed} of {len(lock.trials)} trials failed{' (fail_fast)' if fail_fast else ''}; "
            f"each one's error is in {where}"
        )
    if lock.best:
        logger.info("best trial %s: %s = %s", lock.best.save_dir, lock.best.metric, lock.best.value)
    events.emit_sweep_completed(lock)
    return lock


def _subflow_runner(trial_flow: Flow[..., Any]) -> RunTrial:
    def run(trial: Trial, parameters: dict[str, Any]) -> tuple[str | None, str | None]:
        state: State = trial_flow.with_options(flow_run_name=trial.name)(**parameters, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        return flow_run_id, _failure(state)

    return run


def _failure(state: State | None) -> str | None:
    """Why a trial's flow run did not complete (None when it did)."""
    if state is None:
        return "its flow run has no state"
    return None if state.is_completed() else state.message or f"its flow run ended {state.name}"


def _deployment_runner(name: str, flow_name: str) -> RunTrial:
    """Trials as flow runs of the deployment `name`, which must run the sweep's flow."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise FlexlockError(f"no deployment {name!r} on this Prefect server: give `flow/deployment`") from None
        deployed = client.read_flow(found.flow_id).name
    if deployed != flow_name:
        raise SweepError(f"the deployment {name!r} runs the flow {deployed!r}, not the sweep's {flow_name!r}")
    poll = get_settings().api_poll_s

    def run(trial: Trial, parameters: dict[str, Any]) -> tuple[str | None, str | None]:
        flow_run = run_deployment(
            name, parameters=parameters, flow_run_name=trial.name, timeout=None, poll_interval=poll
        )
        return str(flow_run.id), _failure(flow_run.state)

    return run
