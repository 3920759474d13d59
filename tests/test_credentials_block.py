"""MLflow credentials from a Prefect `Secret` block (`FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK`): a flow
run whose environment holds none logs through a token-checking proxy with the block's token,
which is read at run time and left nowhere."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from flexlock_prefect.credentials import as_environment, mlflow_credentials
from flexlock_prefect.diag import relog_all
from flexlock_prefect.exceptions import FlexlockError
from tests.helpers.runs import make_save_dir
from tests.helpers.token_proxy import Proxy


@pytest.mark.parametrize(
    ("value", "variables"),
    [
        ({"token": "t"}, {"MLFLOW_TRACKING_TOKEN": "t"}),
        ('{"username": "u", "password": "p"}', {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}),
    ],
)
def test_a_block_value_is_a_token_or_a_username_and_password(value: object, variables: dict) -> None:
    assert as_environment(value, "mlflow") == variables


@pytest.mark.parametrize("value", ["hunter2-secret", {"password": "hunter2-secret"}, {"token": ""}])
def test_any_other_block_value_is_refused_without_showing_it(value: object) -> None:
    with pytest.raises(FlexlockError, match=r"must hold JSON \{\"username\": …, \"password\": …\} or") as refused:
        as_environment(value, "mlflow")
    assert "hunter2" not in str(refused.value)


def test_credentials_in_the_environment_win_over_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK", "no-such-block")  # never read: no Prefect API needed
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mine")
    with mlflow_credentials():
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "mine"


@pytest.fixture
def proxied(token_proxied: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """MLflow behind a token proxy, with no MLflow credentials in the environment."""
    for variable in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    return token_proxied


def _logs(flow_run_id: str) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


@pytest.mark.integration
def test_a_flow_run_logs_to_mlflow_with_the_blocks_token_and_leaves_it_nowhere(
    prefect_api: str, proxied: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = f"mlflow-{uuid.uuid4().hex[:8]}"
    Secret(value={"token": proxied.token}).save(block)
    save_dir = make_save_dir(tmp_path / "runs", "a")

    refused = relog_all(root=str(tmp_path / "runs"), return_state=True)  # no setting: no credentials
    assert refused.is_failed() and "did not accept the credentials" in refused.message

    monkeypatch.setenv("FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK", block)
    state = relog_all(root=str(tmp_path / "runs"), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["relogged"] == 1 and proxied.forwarded > 0
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ  # only for the run

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    said = json.dumps(flow_run.parameters) + _logs(str(flow_run.id)) + str(state.result())
    assert proxied.token not in said and save_dir.split("/")[-1] in said


@pytest.mark.integration
def test_a_block_that_is_not_there_is_one_clear_error(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK", "no-such-block")
    for variable in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    missing = pytest.raises(FlexlockError, match="no Secret block 'no-such-block' on this Prefect server")
    with missing, mlflow_credentials():
        pass
