"""The trials of a sweep asked of an Optuna study (the optional extra `optuna`), told back as they end.

`sweep(flow, distributions=…, study=optuna.create_study(…), n_trials=N, metric=…, root=…)`
asks the study for each point (`Study.ask` with the distributions as Optuna's), runs it as any
trial (its key, its save_dir `<root>/trial-<key>`, its run.lock, its diag, its MLflow child
run) and tells the study the trial's `metric`, or that it failed.

The sweep root, not the Optuna storage, is the study's record, so the search survives a new
process with or without an Optuna storage:
- `n_trials` is the number of completed trials the root should hold, as Optuna's
  `MaxTrialsCallback` counts them: a sweep run again with the same `n_trials` asks nothing, and
  with more it asks only the difference (a failed trial is asked again).
- The completed trials of the root's sweep.lock that the study does not hold (an in-memory
  study in a new process) are added to it first (`Study.add_trial`), so its sampler knows them.
- Each Optuna trial carries the user attributes `flexlock.trial_key_hash`,
  `flexlock.study_key_hash` and `flexlock.save_dir`.
- A sampler that stops the study (`BruteForceSampler` with every point asked) ends the asking.
- A point the sampler asks again (same inputs, same key) is not run again: it is told the
  result of the trial with that key, once that one has finished, and another point is asked.
  After `REPEATS_IN_A_ROW` of those in a row, the sweep takes the space as exhausted and stops
  asking (a seeded sampler in a new process starts by asking the first process's points).

The study key of such a sweep hashes the base and `{"distributions": …, "asked_by": "optuna"}`:
the sampler, its seed and `n_trials` are how the study is searched, not what it is, so growing
`n_trials` or changing the sampler keeps the study key, the root and every trial.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flexlock_prefect.exceptions import SweepError
from flexlock_prefect.study import Distribution, Space, Study, Trial, TrialPlanner
from flexlock_prefect.sweeplock import Mode, SweepLock, SweepRecord, TrialRecord, reusable
from flexlock_prefect.tracking.tags import STUDY_KEY_HASH, TRIAL_KEY_HASH

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

ASKED_BY = "optuna"
SAVE_DIR_ATTR = "flexlock.save_dir"
REPEATS_IN_A_ROW = 20
"""Points asked in a row that the root already has, after which the space is taken as exhausted."""


def study_mode(study: optuna.Study, mode: Mode | None) -> Mode:
    """The sweep's mode from the study's direction, refusing a `mode` that contradicts it.

    Raises:
        SweepError: a multi-objective study, or a `mode` against its direction.
    """
    import optuna

    if len(study.directions) != 1:
        raise SweepError(
            f"the Optuna study {study.study_name!r} has {len(study.directions)} objectives: a sweep reports one metric"
        )
    direction: Mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    if mode not in (None, direction):
        raise SweepError(
            f"mode is {mode!r} but the Optuna study {study.study_name!r} is to "
            f"{'maximize' if direction == 'max' else 'minimize'}: drop mode or create the study with its direction"
        )
    return direction


def optuna_distributions(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """The space's distributions as Optuna's (`int` includes both ends, as Optuna's does)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def convert(key: str, dist: Distribution) -> optuna.distributions.BaseDistribution:
        if dist.kind == "choice":
            options = dist.args[0]
            if not all(option is None or isinstance(option, bool | int | float | str) for option in options):
                raise SweepError(f"Optuna's choices of {key!r} must be numbers, strings, booleans or null")
            return CategoricalDistribution(options)
        low, high = dist.args
        if dist.kind == "int":
            return IntDistribution(low, high)
        return FloatDistribution(low, high, log=dist.kind == "loguniform")

    return {key: convert(key, dist) for key, dist in space.distributions}


class OptunaTrials:
    """The trials to run for an Optuna study under one root: iterate to ask, `tell` each result.

    Iterating asks the study for points until the root holds `n_trials` completed trials (bounded
    by the trials run, so a flow that always fails does not loop); it yields only the trials to
    run, recording and telling at once those the root already completed.
    """

    def __init__(
        self, study: optuna.Study, space: Space, planner: TrialPlanner, record: SweepRecord, n_trials: int
    ) -> None:
        self._study = study
        self._distributions = optuna_distributions(space)
        self._planner = planner
        self._record = record
        self._to_ask = max(n_trials - record.lock.count("completed"), 0)
        self._running: dict[str, list[optuna.trial.Trial]] = {}
        self._add_the_roots_trials()

    @classmethod
    def start(
        cls,
        study: optuna.Study,
        space: Space,
        planner: TrialPlanner,
        planned: Study,
        flow: str,
        metric: str,
        mode: Mode,
        n_trials: int,
    ) -> OptunaTrials:
        """Open the root's record of this study, keeping its trials when the study key matches;
        one left running by a sweep that stopped is failed, unless its run.lock says it completed."""
        lock = SweepLock.create(planner.root, planned, flow, metric, mode, n_trials)
        try:
            previous = SweepLock.load(planner.root)
        except SweepError:
            previous = None  # none yet, or unreadable: this study starts it again
        if previous is not None and previous.study_key_hash == planned.key:
            trials = [_settled(trial, metric) for trial in previous.trials]
            lock = lock.model_copy(update={"trials": trials, "created_at": previous.created_at})
        return cls(study, space, planner, SweepRecord(lock), n_trials)

    @property
    def record(self) -> SweepRecord:
        return self._record

    def __iter__(self) -> Iterator[Trial]:
        repeats = 0
        while self._to_ask > 0:
            if repeats == REPEATS_IN_A_ROW:
                logger.warning("the study asked %d known points in a row: the space looks exhausted", repeats)
                return
            repeats += 1
            asked = self._study.ask(self._distributions)
            try:
                trial = self._planner.trial(asked.params)
            except Exception:
                self._study.tell(asked, state=_failed())
                raise
            for name, value in self._attributes(trial.key, trial.save_dir).items():
                asked.set_user_attr(name, value)
            if trial.key in self._running:  # asked again while it runs: told its result with it
                self._running[trial.key].append(asked)
                continue
            if done := reusable(trial, self._record.lock.metric):
                self._record.update(done)
                self._tell(asked, done)
                continue
            self._running[trial.key] = [asked]
            self._to_ask, repeats = self._to_ask - 1, 0
            yield trial

    def tell(self, result: TrialRecord) -> None:
        """Report a finished trial to every Optuna trial that asked for its key."""
        for asked in self._running.pop(result.trial_key_hash, []):
            self._tell(asked, result)

    def _tell(self, asked: optuna.trial.Trial, result: TrialRecord) -> None:
        completed = result.status == "completed" and result.metric_value is not None
        try:  # failed, or completed without the metric: Optuna needs a value to learn from
            self._study.tell(asked, result.metric_value if completed else None, None if completed else _failed())
        except RuntimeError as exc:
            # A sampler that has asked for every point of the space (BruteForceSampler) calls
            # `Study.stop`, which raises outside `Study.optimize` once the result is stored.
            if "Study.stop" not in str(exc):
                raise
            logger.info("the study's sampler has asked for every point of the space: no further trial")
            self._to_ask = 0

    def _add_the_roots_trials(self) -> None:
        """Give the study the root's completed trials it does not hold (a new in-memory study)."""
        import optuna

        held = {trial.user_attrs.get(TRIAL_KEY_HASH) for trial in self._study.get_trials(deepcopy=False)}
        for trial in self._record.lock.trials:
            if trial.status != "completed" or trial.metric_value is None or trial.trial_key_hash in held:
                continue
            try:
                self._study.add_trial(
                    optuna.trial.create_trial(
                        params=trial.values,
                        distributions=self._distributions,
                        value=trial.metric_value,
                        user_attrs=self._attributes(trial.trial_key_hash, trial.save_dir),
                    )
                )
            except ValueError as exc:  # values Optuna cannot take back (a redacted one): it only misses a hint
                logger.warning("the study does not take the trial %s back: %s", trial.save_dir, exc)

    def _attributes(self, key: str, save_dir: str) -> dict[str, Any]:
        return {TRIAL_KEY_HASH: key, STUDY_KEY_HASH: self._record.lock.study_key_hash, SAVE_DIR_ATTR: save_dir}


def _settled(trial: TrialRecord, metric: str) -> TrialRecord:
    """A trial of an earlier sweep as it ended: one still pending or running there is completed
    if its run.lock says so, and failed otherwise (its sweep stopped before it finished)."""
    if trial.status not in ("pending", "running"):
        return trial
    planned = Trial(trial.trial_key_hash, trial.values, trial.values, trial.save_dir)
    return reusable(planned, metric) or trial.model_copy(
        update={"status": "failed", "error": "the sweep that ran it stopped before it finished"}
    )


def _failed() -> optuna.trial.TrialState:
    import optuna

    return optuna.trial.TrialState.FAIL
