"""`sweep` with an Optuna study, against real Prefect (and MLflow) servers over the example flow:
the study asks each trial and is told its metric; the root carries the study across processes."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from flexlock_prefect import RunLock, relog
from flexlock_prefect.examples import train as example
from flexlock_prefect.exceptions import SweepError
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.sweep import sweep
from flexlock_prefect.sweeplock import SweepLock
from flexlock_prefect.tracking import tags as t
from tests.helpers.runs import cli

pytestmark = [pytest.mark.integration, pytest.mark.one_prefect]

TRAIN = "flexlock_prefect.examples.train.train"
C_RANGE = {"model.C": ["loguniform", 0.01, 10.0]}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return example.prepare_example_data(tmp_path / "data.csv")


def new_study(seed: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))


def optuna_sweep(data: Path, root: Path, study: optuna.Study, n_trials: int, **options: object) -> SweepLock:
    """The example flow's C asked of `study` (in `C_RANGE` unless `distributions` says otherwise)."""
    options = {"distributions": C_RANGE, "metric": "roc_auc", **options}
    return sweep(
        example.train, root=str(root), overrides=[f"input_data={data}"], study=study, n_trials=n_trials, **options
    )


def digests(lock: SweepLock) -> dict[str, str]:
    return {trial.save_dir: RunLock.load(trial.save_dir).digest for trial in lock.trials}


def test_the_study_asks_each_trial_and_is_told_its_metric(prefect_api: str, data: Path, tmp_path: Path) -> None:
    study = new_study()
    lock = optuna_sweep(data, tmp_path / "sweep", study, n_trials=3)

    assert lock.n_trials == 3 and lock.mode == "max" and lock.count("completed") == 3
    assert lock.space == {"distributions": {"model.C": ["loguniform", 0.01, 10.0]}, "asked_by": "optuna"}
    told = {trial.user_attrs[t.TRIAL_KEY_HASH]: trial for trial in study.trials}
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in lock.trials:
        asked = told[trial.trial_key_hash]
        assert (
            asked.value
            == trial.metric_value
            == json.loads((Path(trial.save_dir[7:]) / "metrics.json").read_text())["roc_auc"]
        )
        assert asked.params == trial.values and asked.user_attrs["flexlock.save_dir"] == trial.save_dir
        assert asked.user_attrs[t.STUDY_KEY_HASH] == lock.study_key_hash
        assert RunLock.load(trial.save_dir).fingerprint == trial.trial_key_hash
    assert lock.best is not None and lock.best.value == study.best_value


def test_a_new_process_s_study_learns_the_roots_trials_and_runs_only_the_ones_missing(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sweep"
    first = optuna_sweep(data, root, new_study(), n_trials=2)
    before = digests(first)

    again = optuna_sweep(data, root, new_study(), n_trials=2)  # as a new process would: a new in-memory study
    assert digests(again) == before and again.study_key_hash == first.study_key_hash

    study = new_study(seed=1)
    grown = optuna_sweep(data, root, study, n_trials=3)
    assert grown.count("completed") == 3 and grown.study_key_hash == first.study_key_hash
    assert {k: v for k, v in digests(grown).items() if k in before} == before  # the first two did not run again
    assert len(study.trials) == 3  # the root's two, added to the study, and the one it asked for
    assert {trial.user_attrs[t.TRIAL_KEY_HASH] for trial in study.trials} == {
        trial.trial_key_hash for trial in grown.trials
    }


def test_a_failed_trial_is_told_failed_and_the_others_complete(prefect_api: str, data: Path, tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.BruteForceSampler(seed=0))
    choices = {"model.C": ["choice", [-1.0, 0.5, 2.0]]}  # C <= 0 raises in scikit-learn
    lock = optuna_sweep(data, tmp_path / "sweep", study, n_trials=3, distributions=choices)

    assert sorted(trial.values["model.C"] for trial in lock.trials) == [-1.0, 0.5, 2.0]
    states = {trial.user_attrs[t.TRIAL_KEY_HASH]: trial.state for trial in study.trials}
    for trial in lock.trials:
        failed = trial.values["model.C"] < 0
        assert trial.status == ("failed" if failed else "completed")
        assert states[trial.trial_key_hash] == (
            optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE
        )


def test_a_mode_against_the_studys_direction_is_refused(prefect_api: str, data: Path, tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="mode is 'min' but the Optuna study .* is to maximize"):
        optuna_sweep(data, tmp_path / "sweep", new_study(), n_trials=1, mode="min")
    with pytest.raises(SweepError, match="needs both study and n_trials"):
        sweep(example.train, root=str(tmp_path / "sweep"), distributions=C_RANGE, study=new_study())


def test_trials_from_two_processes_sharing_an_optuna_storage_are_children_of_one_active_parent(
    prefect_api: str, mlflow_server: str, data: Path, tmp_path: Path
) -> None:
    """The parent is the root's, not a process's (Optuna's MLflow callback loses it: optuna#5148)."""
    root, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'optuna.db'}"
    options = ["--space", "model.C=loguniform:0.01:10", "--metric", "roc_auc", "--root", str(root)]
    options += ["--optuna-storage", storage, "--study-name", "churn-c", "--override", f"input_data={data}"]
    for wanted in (2, 4):
        result = cli("sweep", TRAIN, "--optuna", str(wanted), *options, MLFLOW_TRACKING_URI=mlflow_server)
        assert result.returncode == 0, result.stderr
        relog(root=str(root))  # as the trials' triggered diags would

    lock = SweepLock.load(str(root))
    stored = optuna.load_study(study_name="churn-c", storage=storage)
    # The second process's seeded sampler asked the first's two points again: told, not run.
    assert [trial.state for trial in stored.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert len(lock.trials) == lock.count("completed") == 4
    assert {trial.user_attrs[t.TRIAL_KEY_HASH] for trial in stored.trials} == {x.trial_key_hash for x in lock.trials}
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]

    def active(tag: str, value: str) -> list:
        return client.search_runs(experiments, f"tags.`{tag}` = '{value}' AND tags.`{t.STATUS}` = '{t.ACTIVE}'")

    [parent] = active(t.LOGICAL_RUN_KEY, logical_run_key(lock.root))
    children = active(t.MLFLOW_PARENT_RUN_ID, parent.info.run_id)
    assert sorted(run.data.tags[t.TRIAL_KEY_HASH] for run in children) == sorted(x.trial_key_hash for x in lock.trials)
    assert {run.data.tags[t.STUDY_KEY_HASH] for run in children} == {parent.data.tags[t.STUDY_KEY_HASH]}
