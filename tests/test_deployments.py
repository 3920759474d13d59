"""Deployments: the yaml and the served deployments agree, and the event chain runs end to end.

A real `prefect server start` and a real `mlflow server`; the deployments are served from a
subprocess (`deployments/serve.py`), so every diag run here is created by a trigger.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.events import DeploymentEventTrigger

from flexlock_prefect import RunLock
from flexlock_prefect.examples import train as example_train
from flexlock_prefect.local import served_deployments
from flexlock_prefect.serving import example_pipeline, write_project_yaml
from flexlock_prefect.sweep import sweep
from flexlock_prefect.tracking import tags as t
from tests.helpers.prefect_api import poll, wait_for_flow_run, wait_for_flow_runs
from tests.helpers.runs import active_runs_of

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "deployments" / "prefect.yaml"


GRID_2X2 = {"model.C": [0.5, 2.0], "seed": [0, 1]}
SERVED = {"train/train", "diag/train", "relog-all/train", "promote/train", "registry-audit/train"}


def test_prefect_yaml_is_the_one_written_from_the_example_pipeline(tmp_path: Path) -> None:
    assert write_project_yaml(tmp_path / "prefect.yaml", ROOT).read_text() == YAML.read_text(), (
        "deployments/prefect.yaml is out of date: run `python -m flexlock_prefect.serving --write-yaml "
        "deployments/prefect.yaml`"
    )


def test_prefect_yaml_and_serve_declare_the_same_deployments_schedules_and_triggers() -> None:
    declared = yaml.safe_load(YAML.read_text())["deployments"]
    served = example_pipeline().to_deployments()
    assert [d["entrypoint"] for d in declared] == [d.entrypoint for d in served]
    assert [[s["cron"] for s in d.get("schedules", [])] for d in declared] == [
        [s.schedule.cron for s in d.schedules] for d in served
    ]
    for entry, deployment in zip(declared, served, strict=True):
        triggers = [DeploymentEventTrigger(**t).model_dump() for t in entry.get("triggers", [])]
        assert triggers == [t.model_dump() for t in deployment.triggers]
        assert entry.get("parameters", {}) == deployment.parameters


@pytest.fixture(scope="module")
def served(module_prefect_api: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example pipeline served in a subprocess polling every second; its deployments and
    their automations are deleted afterwards, so later tests' runs trigger nothing."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served_deployments(log):
        try:
            _wait_for_deployments(SERVED, log)
            yield
        finally:
            with get_client(sync_client=True) as client:
                for deployment in client.read_deployments():
                    client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
                    client.delete_deployment(deployment.id)


def _wait_for_deployments(names: set[str], log: Path, timeout_s: float = 90) -> None:
    def served_names() -> set[str]:
        with get_client(sync_client=True) as client:
            return {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}

    found, done = poll(served_names, lambda found: names <= found, timeout_s)
    if not done:
        raise AssertionError(f"deployments {names - found} not served; serve.py said:\n{log.read_text()[-3000:]}")


def _wait_for_active(save_dir: str, timeout_s: float = 120) -> list:
    """The active runs of save_dir once there is one (its triggered diag run logged it)."""
    active, _ = poll(lambda: active_runs_of(save_dir), bool, timeout_s, interval_s=1)
    return active


@pytest.mark.integration
def test_a_completed_main_run_is_logged_to_mlflow_by_the_triggered_diag_deployment(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    example = example_train
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/a", "model_name=''"])

    [diag_run] = wait_for_flow_runs("diag/train", 1)
    assert diag_run.created_by is not None and diag_run.created_by.type == "AUTOMATION"
    assert diag_run.parameters == {"save_dir": save_dir}
    assert diag_run.state.is_completed(), diag_run.state
    [active] = active_runs_of(save_dir)
    assert active.data.tags["flexlock.lock_digest"] == RunLock.load(save_dir).digest


@pytest.mark.integration
def test_a_sweep_through_the_served_train_deployment_gives_one_parent_with_each_triggered_trial_diag_a_child(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    data = example_train.prepare_example_data(tmp_path / "data.csv")
    overrides = [f"input_data={data}", "model_name=''"]
    lock = sweep(
        example_train.train, grid=GRID_2X2, root=str(tmp_path / "sweep"), overrides=overrides, deployment="train/train"
    )

    diag_runs = wait_for_flow_runs("diag/train", 4)
    assert {r.parameters["save_dir"] for r in diag_runs} == {t.save_dir for t in lock.trials}
    assert all(r.created_by.type == "AUTOMATION" and r.state.is_completed() for r in diag_runs)
    [parent] = active_runs_of(lock.root)
    assert parent.data.tags[t.SWEEP] == "true" and parent.data.tags[t.STUDY_KEY_HASH] == lock.study_key_hash
    trial_runs = [run for trial in lock.trials for run in active_runs_of(trial.save_dir)]
    assert sorted(run.data.tags[t.TRIAL_KEY_HASH] for run in trial_runs) == sorted(
        x.trial_key_hash for x in lock.trials
    )
    assert {run.data.tags[t.MLFLOW_PARENT_RUN_ID] for run in trial_runs} == {parent.info.run_id}
    assert {run.data.tags[t.STUDY_KEY_HASH] for run in trial_runs} == {lock.study_key_hash}


@pytest.mark.integration
def test_a_relog_request_event_supersedes_every_run_under_the_root_once(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    example = example_train
    data = example.prepare_example_data(tmp_path / "data.csv")
    root = tmp_path / "runs"
    save_dirs = [
        example.train(overrides=[f"input_data={data}", f"save_dir={root}/{name}", "model_name=''"]) for name in "xy"
    ]
    previous = {}
    for save_dir in save_dirs:  # the triggered diag runs logged each save_dir once
        [previous[save_dir]] = _wait_for_active(save_dir)

    requested = subprocess.run(
        [
            sys.executable,
            "-m",
            "flexlock_prefect",
            "relog",
            "--root",
            str(root),
            "--via-event",
            "--main",
            "train",
            "--force",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert requested.returncode == 0, requested.stderr

    [relog_run] = wait_for_flow_runs("relog-all/train", 1)
    assert relog_run.created_by.type == "AUTOMATION"
    assert relog_run.parameters == {
        "root": f"file://{root}",
        "force": True,
        "diag": "flexlock_prefect.examples.diag.diag",
        "main": "train",
    }
    assert relog_run.state.is_completed(), relog_run.state
    for save_dir in save_dirs:
        [active] = active_runs_of(save_dir)
        assert active.data.tags["flexlock.supersedes_run_id"] == previous[save_dir].info.run_id


@pytest.mark.integration
def test_the_cli_promotes_through_the_served_deployment_and_approves(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    from flexlock_prefect.registry import LIFECYCLE

    model = f"served-{tmp_path.name[-8:].lower().replace('_', '-')}"
    example = example_train
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/m", f"model_name={model}"])
    assert _wait_for_active(save_dir), "the triggered diag run (it registers version 1) did not log the save_dir"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flexlock_prefect", *args], capture_output=True, text=True, timeout=120
        )

    started = cli("promote", model, "1", "--to", "dev")
    assert started.returncode == 0, started.stderr
    flow_run_id = started.stdout.split("flow run ")[1].split()[0]
    wait_for_flow_run(flow_run_id, lambda run: run.state.is_paused())
    assert cli("approve", flow_run_id, "--comment", "first model").returncode == 0
    final = wait_for_flow_run(flow_run_id, lambda run: run.state.is_final()).state
    assert final.is_completed(), final
    assert MlflowClient().get_model_version(model, "1").tags[LIFECYCLE] == "dev"
    assert "first model" in cli("history", model).stdout
