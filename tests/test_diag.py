"""The default diag flow end to end: example main run → diag → MLflow run, model, link, event;
and the relog-all flow, which reports every save_dir of a root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect.artifacts import artifact_key
from flexlock_prefect.diag import relog_all
from flexlock_prefect.events import RUN_RELOGGED
from flexlock_prefect.examples import diag as example_diag
from flexlock_prefect.examples import train as example_train
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.client import all_experiment_ids
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.prefect_api import artifacts, wait_for_events
from tests.helpers.runs import make_save_dir

pytestmark = pytest.mark.integration


def test_diag_logs_the_example_run_registers_its_model_and_announces_it(
    prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    example, diag = example_train, example_diag
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/run", "model_name=diag-test-clf"])

    run_id = diag.diag(save_dir=save_dir)

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags[STATUS] == ACTIVE and run.data.tags["model_name"] == "diag-test-clf"
    assert {"accuracy", "f1", "roc_auc"} <= set(run.data.metrics)
    assert {"run.lock", "metrics.json", "roc.png", "model.pkl"} <= {a.path for a in client.list_artifacts(run_id)}
    [version] = client.search_model_versions("name='diag-test-clf'")
    assert version.run_id == run_id

    [link] = artifacts(artifact_key(save_dir, "mlflow-run"))
    assert f"({mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{run_id})" in link.data
    [event] = wait_for_events(RUN_RELOGGED, f"flexlock.run.{logical_run_key(save_dir)}")
    assert event.payload["mlflow_run_id"] == run_id and event.payload["superseded_run_ids"] == []

    assert diag.diag(save_dir=save_dir) is None  # up to date: same lock digest, same diag code
    rerun = diag.diag(save_dir=save_dir, force=True)
    assert client.get_run(rerun).data.tags["flexlock.supersedes_run_id"] == run_id


def test_relog_all_relogs_every_run_under_a_root_once(prefect_api: str, mlflow_server: str, tmp_path: Path) -> None:
    example = example_train
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dirs = [
        example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/{name}", "model_name=''"])
        for name in ("a", "b")
    ]
    entrypoint = "flexlock_prefect.examples.diag.diag"
    counts = {"relogged": 2, "skipped": 0, "disabled": 0, "failed": 0}
    assert relog_all(root=str(tmp_path / "runs"), diag=entrypoint) == counts
    assert relog_all(root=str(tmp_path / "runs"), diag=entrypoint) == counts | {"relogged": 0, "skipped": 2}
    for save_dir in save_dirs:
        wait_for_events(RUN_RELOGGED, f"flexlock.run.{logical_run_key(save_dir)}")

    relog_all(root=str(tmp_path / "runs"), diag=entrypoint, force=True)
    for save_dir in save_dirs:  # the link follows every relog: it names the active run, not the one it replaced
        [active, previous] = runs_newest_first(save_dir)[:2]
        [newest, *_] = artifacts(artifact_key(save_dir, "mlflow-run"))
        assert f"/#/runs/{active.info.run_id})" in newest.data and previous.info.run_id not in newest.data
        assert newest.description == f"{save_dir.rstrip('/').rsplit('/', 1)[-1]}: active MLflow run ({save_dir})"


def runs_newest_first(save_dir: str) -> list:
    client = MlflowClient()
    return runs_of(client, all_experiment_ids(client), logical_run_key(save_dir))


def test_relog_all_reports_every_save_dir_then_fails_naming_the_corrupt_one(
    prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    good = [make_save_dir(root, "a"), make_save_dir(root, "c")]
    (root / "b").mkdir()
    (root / "b" / "run.lock").write_text("flexlock: 1\nconfig: [")
    bad = f"file://{root / 'b'}"

    state = relog_all(root=str(root), return_state=True)

    assert state.is_failed()
    assert f"1 of 3 save_dirs failed to relog: {bad};" in state.message
    [artifact] = [a for a in artifacts("relog-all") if a.flow_run_id == state.state_details.flow_run_id]
    rows = {row["save_dir"]: row for row in json.loads(artifact.data)}
    assert artifact.description.endswith("3 save_dirs: 2 relogged, 1 failed")
    assert rows[bad]["outcome"] == "failed" and "run.lock is not valid YAML" in rows[bad]["reason"]
    for save_dir in good:
        assert rows[save_dir]["outcome"] == "relogged" and rows[save_dir]["reason"] == ""
        run = MlflowClient().get_run(rows[save_dir]["MLflow run"])
        assert run.data.tags[STATUS] == ACTIVE
        [event] = wait_for_events(RUN_RELOGGED, f"flexlock.run.{logical_run_key(save_dir)}")
        assert event.payload["mlflow_run_id"] == run.info.run_id
