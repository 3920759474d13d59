"""A sweep in MLflow, against real MLflow and Prefect servers over the example flow: one active
parent per sweep root, every trial's active run its child, through trial and parent relogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from flexlock_prefect import relog
from flexlock_prefect.diag import relog_sweep
from flexlock_prefect.examples import train as example
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.sweep import sweep
from flexlock_prefect.sweeplock import SweepLock
from flexlock_prefect.tracking import tags as t
from flexlock_prefect.tracking.sweeps import SweepKeys, keys_of

pytestmark = [pytest.mark.integration, pytest.mark.one_prefect]

GRID = {"model.C": [0.1, 1.0], "seed": [0, 1]}


def active(key_tag: str, value: str) -> list[Run]:
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(
        experiments, filter_string=f"tags.`{key_tag}` = '{value}' AND tags.`{t.STATUS}` = '{t.ACTIVE}'"
    )


def parent_of(root: str) -> Run:
    [parent] = active(t.LOGICAL_RUN_KEY, logical_run_key(root))
    return parent


def children_of(parent: Run) -> list[Run]:
    return active(t.MLFLOW_PARENT_RUN_ID, parent.info.run_id)


@pytest.fixture
def swept(prefect_api: str, mlflow_server: str, tmp_path: Path) -> SweepLock:
    """A completed 2×2 sweep (which logs its parent) whose trials were then relogged with the root."""
    data = example.prepare_example_data(tmp_path / "data.csv")
    lock = sweep(
        example.train, grid=GRID, root=str(tmp_path / "sweep"), overrides=[f"input_data={data}"], metric="roc_auc"
    )
    outcomes = relog(root=lock.root)
    assert [o.outcome for o in outcomes] == ["relogged"] * 4 + ["skipped"]  # the sweep logged the parent
    return lock


def test_a_2x2_sweep_has_one_active_parent_with_four_active_children_that_share_its_study_key(
    swept: SweepLock,
) -> None:
    parent = parent_of(swept.root)
    tags = parent.data.tags
    assert tags[t.SWEEP] == "true" and tags[t.STUDY_KEY_HASH] == swept.study_key_hash
    assert tags[t.SWEEP_SPACE] == '{"grid": {"model.C": [0.1, 1.0], "seed": [0, 1]}}'
    assert tags[t.BEST_TRIAL_KEY_HASH] == swept.best.trial_key_hash
    assert parent.data.metrics["best.roc_auc"] == swept.best.value
    children = children_of(parent)
    assert len(children) == 4
    assert {c.data.tags[t.STUDY_KEY_HASH] for c in children} == {swept.study_key_hash}
    assert sorted(c.data.tags[t.TRIAL_KEY_HASH] for c in children) == sorted(x.trial_key_hash for x in swept.trials)
    assert {c.data.tags[t.LOGICAL_RUN_ID] for c in children} == {x.save_dir for x in swept.trials}
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"sweep.lock", "trials.csv", "trials.json", "roc_auc-vs-model.C.png", "roc_auc-vs-seed.png"} <= artifacts
    rows = MlflowClient().download_artifacts(parent.info.run_id, "trials.csv")
    header, *lines = Path(rows).read_text().splitlines()
    assert len(lines) == 4 and {"trial_key_hash", "status", "values.model.C", "metrics.roc_auc"} <= set(
        header.split(",")
    )


def test_a_relogged_trial_s_new_run_is_a_child_of_the_active_parent(swept: SweepLock) -> None:
    trial = swept.trials[0]
    [outcome] = relog([trial.save_dir], force=True)
    parent = parent_of(swept.root)
    new = MlflowClient().get_run(outcome.run_id)
    assert new.data.tags[t.STATUS] == t.ACTIVE and new.data.tags[t.MLFLOW_PARENT_RUN_ID] == parent.info.run_id
    assert new.data.tags[t.TRIAL_KEY_HASH] == trial.trial_key_hash
    assert len(children_of(parent)) == 4  # the new run replaced its predecessor among the children


def test_a_parent_relog_adopts_every_active_child_and_deprecates_the_old_parent(swept: SweepLock) -> None:
    old = parent_of(swept.root)
    outcome = relog_sweep(swept.root, force=True)
    assert outcome.outcome == "relogged" and outcome.superseded_run_ids == [old.info.run_id]
    new = parent_of(swept.root)
    assert new.info.run_id == outcome.run_id
    assert MlflowClient().get_run(old.info.run_id).data.tags[t.STATUS] == t.DEPRECATED
    assert len(children_of(new)) == 4
    assert children_of(old) == []  # no active child points at the deprecated parent


def test_trials_logged_before_their_parent_are_adopted_by_its_first_relog(
    prefect_api: str, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = example.prepare_example_data(tmp_path / "data.csv")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the sweep logs no parent
    lock = sweep(example.train, grid=GRID, root=str(tmp_path / "sweep"), overrides=[f"input_data={data}"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    runs = [MlflowClient().get_run(o.run_id) for o in relog([x.save_dir for x in lock.trials])]
    assert all(t.MLFLOW_PARENT_RUN_ID not in r.data.tags for r in runs)
    assert {r.data.tags[t.STUDY_KEY_HASH] for r in runs} == {lock.study_key_hash}

    assert relog_sweep(lock.root).outcome == "relogged"
    assert {c.info.run_id for c in children_of(parent_of(lock.root))} == {r.info.run_id for r in runs}


def test_keys_are_read_from_tags_and_else_recomputed_from_the_sweep_lock(swept: SweepLock) -> None:
    parent = parent_of(swept.root)
    assert keys_of(parent) == SweepKeys(swept.root, swept.study_key_hash)
    child = next(c for c in children_of(parent) if c.data.tags[t.LOGICAL_RUN_ID] == swept.trials[0].save_dir)
    expected = SweepKeys(swept.root, swept.study_key_hash, swept.trials[0].trial_key_hash)
    assert keys_of(child) == expected
    MlflowClient().delete_tag(child.info.run_id, t.STUDY_KEY_HASH)
    assert keys_of(MlflowClient().get_run(child.info.run_id)) == expected


def test_relog_all_over_a_sweep_root_relogs_its_trials_and_parent_without_a_warning(
    swept: SweepLock, caplog: pytest.LogCaptureFixture
) -> None:
    from flexlock_prefect.diag import relog_all

    counts = relog_all(root=swept.root, force=True)

    assert counts == {"relogged": 5, "skipped": 0, "disabled": 0, "failed": 0}
    assert "no relogged event" not in caplog.text
    assert {run.info.run_id for run in children_of(parent_of(swept.root))} == {
        run.info.run_id for trial in swept.trials for run in active(t.LOGICAL_RUN_KEY, logical_run_key(trial.save_dir))
    }
