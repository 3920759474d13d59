"""The scale-out configuration end to end, every part real and on loopback: PostgreSQL, a Prefect
server on it, two `process` workers pulling the main runs from the work pool of
`deployments/prefect.yaml`, two warm runners (`flexlock-prefect serve --queue diag`) serving its
diag queue, an MLflow server on PostgreSQL with artifacts on S3 (moto), and save_dirs on S3.

Both servers authenticate (an auth string, MLflow's basic-auth app), as `deployments/compose.yaml`
has them. Twenty main runs go through the work pool at once; each completion must fire exactly one diag
run through the deployment's trigger, run by one of the competing runners, and one registered model
then goes to prod with approvals, its promote runs paused and resumed on those runners.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flexlock_prefect import RunLock, storage
from flexlock_prefect.examples import train as example_train
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.pipeline import DIAG_QUEUE
from flexlock_prefect.registry import APPROVED_BY, LIFECYCLE, history
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, LOCK_DIGEST, STATUS
from flexlock_prefect.verify import verify_lock
from tests.helpers.prefect_api import wait_for_flow_run, wait_for_flow_runs
from tests.helpers.scaleout import WORKER_ACCOUNT, ScaleStack, scale_stack, work_pool_name

pytestmark = [pytest.mark.integration, pytest.mark.scale]

ROOT = Path(__file__).resolve().parents[1]
MAIN_RUNS = 20
MODEL = "scale-classifier"


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStack]:
    """The whole stack, both servers authenticating, with this process's Prefect and MLflow
    clients pointed at it and logged in as the workers are."""
    artifacts = "s3://scale-mlflow-artifacts"
    fs, _ = storage.filesystem(artifacts)
    fs.mkdir(artifacts.removeprefix("s3://"))
    home = tmp_path_factory.mktemp("scale")
    env = {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "FLEXLOCK_CACHE_DIR": str(home / "flexlock-cache")}
    with (
        scale_stack(home, ROOT, artifacts, env=env, warm_queues=(DIAG_QUEUE,)) as running,
        pytest.MonkeyPatch.context() as patch,
        running.prefect_client_settings(),
    ):
        for name, value in running.env.items():
            patch.setenv(name, value)
        yield running


def submit(deployment: str, **parameters) -> FlowRun:
    return run_deployment(deployment, parameters=parameters, timeout=0)


def wait_until_final(flow_run_id: str, timeout_s: float = 300) -> FlowRun:
    return wait_for_flow_run(flow_run_id, lambda run: run.state.is_final() or run.state.is_paused(), timeout_s)


def approve(flow_run_id: str, comment: str) -> None:
    answered = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "approve", flow_run_id, "--reviewer", "ops", "--comment", comment],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answered.returncode == 0, answered.stderr


def promote(version: str, to: str, approval: bool = True) -> FlowRun:
    """The `promote` deployment, run by a warm runner; a paused run is approved through the CLI."""
    run = wait_until_final(submit("promote/train", model=MODEL, version=version, to=to, approval=approval).id)
    if run.state.is_paused():
        approve(str(run.id), f"to {to}")
        run = wait_until_final(str(run.id))
    return run


def test_twenty_s3_main_runs_on_workers_are_each_logged_once_by_warm_diag_runners_and_a_model_reaches_prod(
    stack: ScaleStack, s3_bucket: str, tmp_path: Path
) -> None:
    data = f"{s3_bucket}/data/breast_cancer.csv"
    local_data = example_train.prepare_example_data(tmp_path / "data.csv")
    storage.write_atomic(data, local_data.read_bytes())
    save_dirs = [f"{s3_bucket}/runs/{index:02d}" for index in range(MAIN_RUNS)]

    main_runs = [
        submit("train/train", overrides=[f"input_data={data}", f"save_dir={save_dir}", f"model_name={MODEL}"])
        for save_dir in save_dirs
    ]
    for run in main_runs:
        finished = wait_until_final(str(run.id), timeout_s=600)
        assert finished.state.is_completed() and finished.work_pool_name == work_pool_name(ROOT)

    diag_runs = wait_for_flow_runs("diag/train", MAIN_RUNS, timeout_s=600)
    assert sorted(run.parameters["save_dir"] for run in diag_runs) == save_dirs, "a diag run was lost or doubled"
    assert all(run.created_by.type == "AUTOMATION" and run.state.is_completed() for run in diag_runs)
    assert {run.work_pool_name for run in diag_runs} == {None}, "a diag ran on the pool, not on a warm runner"

    client = MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    active_run_ids = {}
    for save_dir in save_dirs:
        lock = RunLock.load(save_dir)
        runs = runs_of(client, experiments, logical_run_key(save_dir))
        [active] = [run for run in runs if run.data.tags.get(STATUS) == ACTIVE]
        assert len(runs) == 1 and active.data.tags[LOCK_DIGEST] == lock.digest
        assert verify_lock(lock, expected_digest=lock.digest) == []
        active_run_ids[active.info.run_id] = save_dir

    versions = client.search_model_versions(f"name='{MODEL}'")
    assert sorted(v.run_id for v in versions) == sorted(active_run_ids)
    candidate = min(versions, key=lambda v: int(v.version)).version
    assert promote(candidate, "dev", approval=False).state.is_completed()
    assert promote(candidate, "staging").state.is_completed()
    assert promote(candidate, "prod").state.is_completed()
    assert client.get_registered_model(MODEL).aliases == {"prod": candidate}
    promoted = client.get_model_version(MODEL, candidate).tags
    assert (promoted[LIFECYCLE], promoted[APPROVED_BY]) == ("prod", "ops")
    assert {move.mlflow_user for move in history(MODEL)} == {WORKER_ACCOUNT}


def test_both_servers_refuse_a_client_without_credentials(stack: ScaleStack) -> None:
    prefect = requests.post(f"{stack.prefect_api_url}/flows/filter", json={}, timeout=30)
    mlflow = requests.get(f"{stack.mlflow_tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert (prefect.status_code, mlflow.status_code) == (401, 401)
