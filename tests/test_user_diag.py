"""Relogging with the user's own diag, into its own experiment, against a real MLflow server: one
active run per logical run on the whole server, whichever experiment a relog goes to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect import reconcile, relog
from flexlock_prefect.capture import FlowRunRef, capture_run
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers import two_pipelines

pytestmark = pytest.mark.integration

MODULE = os.path.relpath(two_pipelines.__file__, Path.cwd())


def save_dir_of(tmp_path: Path, name: str, recorded_by: str | None = None) -> str:
    flow_run = FlowRunRef(None, recorded_by, None) if recorded_by else None
    _, lock = capture_run({"project": "user-diag-tests", "save_dir": str(tmp_path / name)}, flow_run=flow_run)
    lock.save()
    (tmp_path / name / "metrics.json").write_text(json.dumps({"score": 0.7, "acc": 0.9}))
    return lock.logical_run_id


def runs_everywhere(save_dir: str) -> list:
    client = MlflowClient()
    return runs_of(client, [e.experiment_id for e in client.search_experiments()], logical_run_key(save_dir))


def active_runs(save_dir: str) -> list:
    return [r for r in runs_everywhere(save_dir) if r.data.tags.get(STATUS) == ACTIVE]


def experiment_of(run) -> str:
    return MlflowClient().get_experiment(run.info.experiment_id).name


def test_the_cli_relogs_with_the_users_diag_into_its_experiment(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = save_dir_of(tmp_path, "a")
    result = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "relog", save_dir, "--diag", f"{MODULE}:diag_for_b"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    [active] = active_runs(save_dir)
    assert experiment_of(active) == "pipeline-b"
    assert active.data.metrics["score_b"] == 0.7
    experiment = MlflowClient().get_experiment(active.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the runs view


def test_a_relog_into_another_experiment_supersedes_the_active_run_wherever_it_is(
    mlflow_server: str, tmp_path: Path
) -> None:
    save_dir = save_dir_of(tmp_path, "b")
    [first] = relog([save_dir], diag=two_pipelines.diag_for_b)
    [second] = relog([save_dir], force=True)  # the default body, into the config's experiment
    [active] = active_runs(save_dir)
    assert active.info.run_id == second.run_id and experiment_of(active) == "user-diag-tests"
    assert second.superseded_run_ids == [first.run_id]
    assert [o.outcome for o in reconcile([save_dir])] == ["sound"]


def test_reconcile_repairs_a_logical_run_spread_over_two_experiments(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = save_dir_of(tmp_path, "c")
    relog([save_dir], diag=two_pipelines.diag_for_b)
    relog([save_dir], force=True)
    older, newer = sorted(runs_everywhere(save_dir), key=lambda r: r.info.end_time)
    MlflowClient().set_tag(older.info.run_id, STATUS, ACTIVE)  # a crash between promote and demote
    assert len(active_runs(save_dir)) == 2
    assert [o.outcome for o in reconcile([save_dir])] == ["repaired"]
    assert [r.info.run_id for r in active_runs(save_dir)] == [newer.info.run_id]


def test_a_body_is_given_a_plain_path_for_a_local_save_dir(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = save_dir_of(tmp_path, "d")
    [outcome] = relog([save_dir], diag=two_pipelines.diag_a)  # opens f"{save_dir}/metrics.json" with open()
    assert MlflowClient().get_run(outcome.run_id).data.metrics["score_a"] == 0.7


def test_a_relog_request_nobody_listens_for_is_refused_in_one_line(prefect_api: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "relog", "--root", str(tmp_path), "--via-event", "--main", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: no relog-all deployment of the pipeline 'nope' listens")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_root_shared_by_two_pipelines_is_relogged_pipeline_by_pipeline(mlflow_server: str, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    mine, theirs = save_dir_of(root, "mine", "train-b"), save_dir_of(root, "theirs", "train-a")
    outcomes = relog(root=str(root), diag=two_pipelines.diag_for_b, recorded_by="train-b")
    assert [o.save_dir for o in outcomes] == [mine]
    assert not runs_everywhere(theirs)
