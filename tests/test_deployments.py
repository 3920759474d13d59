"""Deployments: the yaml and the served deployments agree, and the event chain runs end to end.

A real `prefect server start` and a real `mlflow server`; the deployments are served from a
subprocess (`deployments/serve.py`), so every diag run here is created by a trigger.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.events import DeploymentEventTrigger

from flexlock_prefect import RunLock
from flexlock_prefect.demo import load_flow_module, project_root
from flexlock_prefect.local import served_deployments
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.serving import DEPLOYMENTS
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.prefect_api import wait_for_flow_runs
from tests.helpers.scaleout import deploy_project, priority_queue_name, work_pool_name

ROOT = project_root()
YAML = ROOT / "deployments" / "prefect.yaml"


def _yaml_deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(YAML.read_text())["deployments"]}


def test_prefect_yaml_declares_the_same_deployments_schedules_and_triggers_as_serve() -> None:
    declared = _yaml_deployments()
    assert set(declared) == {spec.name for spec in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        deployment = declared[spec.name]
        assert deployment["entrypoint"] == spec.entrypoint
        assert [s["cron"] for s in deployment.get("schedules", [])] == ([spec.cron] if spec.cron else [])
        triggers = [DeploymentEventTrigger(**t).model_dump() for t in deployment.get("triggers", [])]
        assert triggers == [t.model_dump() for t in spec.triggers]


@pytest.fixture(scope="module")
def served(module_prefect_api: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`deployments/serve.py` in a subprocess polling every second; its deployments and their
    automations are deleted afterwards, so later tests' runs trigger nothing."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served_deployments(ROOT, log):
        try:
            _wait_for_deployments({spec.name for spec in DEPLOYMENTS}, log)
            yield
        finally:
            with get_client(sync_client=True) as client:
                for deployment in client.read_deployments():
                    client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
                    client.delete_deployment(deployment.id)


def _wait_for_deployments(names: set[str], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            found = {d.name for d in client.read_deployments()}
        if names <= found:
            return
        time.sleep(0.5)
    raise AssertionError(f"deployments {names - found} not served; serve.py said:\n{log.read_text()[-3000:]}")


def _active(save_dir: str) -> list:
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in runs_of(client, experiments, logical_run_key(save_dir)) if r.data.tags.get(STATUS) == ACTIVE]


@pytest.mark.integration
def test_a_completed_main_run_is_logged_to_mlflow_by_the_triggered_diag_deployment(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    example = load_flow_module("flows/train.py")
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/a", "model_name=''"])

    [diag_run] = wait_for_flow_runs("diag", 1)
    assert diag_run.created_by is not None and diag_run.created_by.type == "AUTOMATION"
    assert diag_run.parameters == {"save_dir": save_dir}
    assert diag_run.state.is_completed(), diag_run.state
    [active] = _active(save_dir)
    assert active.data.tags["flexlock.lock_digest"] == RunLock.load(save_dir).digest


@pytest.mark.integration
def test_a_relog_request_event_supersedes_every_run_under_the_root_once(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    example = load_flow_module("flows/train.py")
    data = example.prepare_example_data(tmp_path / "data.csv")
    root = tmp_path / "runs"
    save_dirs = [
        example.train(overrides=[f"input_data={data}", f"save_dir={root}/{name}", "model_name=''"]) for name in "xy"
    ]
    previous = {}
    for save_dir in save_dirs:  # the triggered diag runs logged each save_dir once
        deadline = time.monotonic() + 120
        while not _active(save_dir) and time.monotonic() < deadline:
            time.sleep(1)
        [previous[save_dir]] = _active(save_dir)

    requested = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "relog", "--root", str(root), "--via-event", "--force"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert requested.returncode == 0, requested.stderr

    [relog_run] = wait_for_flow_runs("relog-all", 1)
    assert relog_run.created_by.type == "AUTOMATION"
    assert relog_run.parameters == {"root": f"file://{root}", "force": True}
    assert relog_run.state.is_completed(), relog_run.state
    for save_dir in save_dirs:
        [active] = _active(save_dir)
        assert active.data.tags["flexlock.supersedes_run_id"] == previous[save_dir].info.run_id


@pytest.mark.integration
def test_the_cli_promotes_through_the_served_deployment_and_approves(
    served: None, prefect_api: str, tmp_path: Path
) -> None:
    from flexlock_prefect.registry import LIFECYCLE

    model = f"served-{tmp_path.name[-8:].lower().replace('_', '-')}"
    example = load_flow_module("flows/train.py")
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/m", f"model_name={model}"])
    deadline = time.monotonic() + 120
    while not _active(save_dir) and time.monotonic() < deadline:  # the triggered diag registers version 1
        time.sleep(1)
    assert _active(save_dir), "the triggered diag run did not log the save_dir"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flexlock_prefect", *args], capture_output=True, text=True, timeout=120
        )

    started = cli("promote", model, "1", "--to", "dev")
    assert started.returncode == 0, started.stderr
    flow_run_id = started.stdout.split("flow run ")[1].split()[0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            if client.read_flow_run(flow_run_id).state.is_paused():
                break
        time.sleep(1)
    assert cli("approve", flow_run_id, "--comment", "first model").returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            final = client.read_flow_run(flow_run_id).state
        if final.is_final():
            break
        time.sleep(1)
    assert final.is_completed(), final
    assert MlflowClient().get_model_version(model, "1").tags[LIFECYCLE] == "dev"
    assert "first model" in cli("history", model).stdout


# Last in the module: `prefect deploy` rewrites the served deployments of the same names.
@pytest.mark.integration
def test_prefect_deploy_of_the_yaml_creates_the_deployments_queues_schedule_and_automations(prefect_api: str) -> None:
    pool, diag_queue = work_pool_name(ROOT), priority_queue_name(ROOT)
    try:
        deploy_project(ROOT, {"PREFECT_API_URL": prefect_api})
        with get_client(sync_client=True) as client:
            deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
            assert {"train/train", "diag/diag", "relog-all/relog-all", "promote/promote"} <= set(deployments)
            assert deployments["train/train"].entrypoint == "flows/train.py:train"
            assert [s.schedule.cron for s in deployments["train/train"].schedules] == ["0 2 * * *"]
            assert {d.work_pool_name for d in deployments.values()} == {pool}
            queues = {
                name: deployments[name].work_queue_name for name in ("train/train", "diag/diag", "promote/promote")
            }
            assert queues == {"train/train": "default", "diag/diag": diag_queue, "promote/promote": diag_queue}
            priorities = {q.name: q.priority for q in client.read_work_queues(work_pool_name=pool)}
            assert priorities[diag_queue] < priorities["default"], "workers must serve diag runs first"
            [automation] = client.read_resource_related_automations(f"prefect.deployment.{deployments['diag/diag'].id}")
            assert automation.name == "flexlock-diag-on-run-completed"
            assert automation.trigger.expect == {"flexlock.run.completed"}
            [action] = automation.actions
            assert action.parameters == {"save_dir": "{{ event.payload.save_dir }}"}
            [relog_automation] = client.read_resource_related_automations(
                f"prefect.deployment.{deployments['relog-all/relog-all'].id}"
            )
            assert relog_automation.trigger.expect == {"flexlock.relog.requested"}
    finally:
        with get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
                client.delete_deployment(deployment.id)
            client.delete_work_pool(pool)
