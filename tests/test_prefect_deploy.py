"""`prefect deploy` of `deployments/prefect.yaml` against a real `prefect server start`.

A module of its own: it deploys under the same names as the served deployments of
`test_deployments.py`, and deletes what it created before the next module starts. The session's
server may hold other modules' served deployments (no work pool): the test reads the yaml's
deployments by name, never the server's whole list, and deletes only those in the yaml's pool.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from tests.helpers.prefect_api import delete_deployments, deployments_named
from tests.helpers.scaleout import deploy_project, priority_queue_name, work_pool_name

ROOT = Path(__file__).resolve().parents[1]
YAML_DEPLOYMENTS = {"train/train", "diag/train", "relog-all/train", "promote/train", "registry-audit/train"}


@pytest.mark.integration
def test_prefect_deploy_of_the_yaml_creates_the_deployments_queues_schedule_and_automations(prefect_api: str) -> None:
    pool, diag_queue = work_pool_name(ROOT), priority_queue_name(ROOT)
    try:
        deploy_project(ROOT, {"PREFECT_API_URL": prefect_api})
        deployments = deployments_named(YAML_DEPLOYMENTS)
        assert set(deployments) == YAML_DEPLOYMENTS
        with get_client(sync_client=True) as client:
            assert deployments["train/train"].entrypoint == "flexlock_prefect.examples.train.train"
            assert [s.schedule.cron for s in deployments["train/train"].schedules] == ["0 2 * * *"]
            assert {deployments[name].work_pool_name for name in YAML_DEPLOYMENTS} == {pool}
            queues = {
                name: deployments[name].work_queue_name for name in ("train/train", "diag/train", "promote/train")
            }
            assert queues == {"train/train": "default", "diag/train": diag_queue, "promote/train": diag_queue}
            priorities = {q.name: q.priority for q in client.read_work_queues(work_pool_name=pool)}
            assert priorities[diag_queue] < priorities["default"], "workers must serve diag runs first"
            [automation] = client.read_resource_related_automations(
                f"prefect.deployment.{deployments['diag/train'].id}"
            )
            assert automation.name == "flexlock-diag-on-train-completed"
            assert automation.trigger.expect == {"flexlock.run.completed"}
            assert automation.trigger.match.model_dump()["flexlock.flow"] == "train"
            [action] = automation.actions
            assert action.parameters == {"save_dir": "{{ event.payload.save_dir }}"}
            [relog_automation] = client.read_resource_related_automations(
                f"prefect.deployment.{deployments['relog-all/train'].id}"
            )
            assert relog_automation.trigger.expect == {"flexlock.relog.requested"}
    finally:
        delete_deployments(name for name, d in deployments_named(YAML_DEPLOYMENTS).items() if d.work_pool_name == pool)
        with get_client(sync_client=True) as client:
            client.delete_work_pool(pool)
