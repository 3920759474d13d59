"""Against `prefect server start` with `PREFECT_SERVER_API_AUTH_STRING`: the example pipeline
works with clients and the served runner holding `PREFECT_API_AUTH_STRING`, and wrong or missing
credentials are one clear line that names the fix and never the credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from flexlock_prefect import RunLock
from flexlock_prefect.examples import train as example
from flexlock_prefect.local import served_deployments, wait_until_idle
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.prefect_api import poll
from tests.helpers.runs import cli
from tests.helpers.servers import PREFECT_AUTH_SECRET

pytestmark = pytest.mark.integration


def _active(save_dir: str) -> list:
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in runs_of(client, experiments, logical_run_key(save_dir)) if r.data.tags.get(STATUS) == ACTIVE]


def test_a_main_run_is_logged_by_its_triggered_diag_with_the_runner_holding_the_auth_string(
    auth_prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with served_deployments(log) as runner:
        with get_client(sync_client=True) as client:
            _, served = poll(lambda: len(client.read_deployments()) >= 3, bool, timeout_s=90)
        assert served, log.read_text()[-3000:]
        data = example.prepare_example_data(tmp_path / "data.csv")
        save_dir = example.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/runs/a", "model_name=''"])
        active, logged = poll(lambda: _active(save_dir), bool, timeout_s=120, interval_s=1)
        wait_until_idle(runner, timeout_s=60)
    assert logged, log.read_text()[-3000:]
    assert active[0].data.tags["flexlock.lock_digest"] == RunLock.load(save_dir).digest
    assert PREFECT_AUTH_SECRET not in log.read_text()


@pytest.mark.parametrize("given", [None, "flexlock:wrong"], ids=["missing", "wrong"])
def test_missing_or_wrong_credentials_are_one_line_naming_the_setting(auth_prefect_api: str, given: str | None) -> None:
    result = cli("approve", "00000000-0000-4000-8000-000000000000", PREFECT_API_AUTH_STRING=given or "")
    message = result.stderr
    assert (result.returncode, message.count("\n")) == (2, 1), message
    assert "answered HTTP 401" in message and "set PREFECT_API_AUTH_STRING" in message
    assert "Traceback" not in message and PREFECT_AUTH_SECRET not in message and "wrong" not in message
