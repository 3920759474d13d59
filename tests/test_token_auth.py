"""MLflow behind a bearer-token proxy (`MLFLOW_TRACKING_TOKEN`): relog and reconcile work through
it, and a wrong token is one clear error, asked once, never retried."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect import reconcile, relog
from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.runs import cli, make_save_dir
from tests.helpers.token_proxy import Proxy

pytestmark = pytest.mark.integration


def test_a_relog_through_the_token_proxy_supersedes_the_save_dirs_run(
    token_proxied: Proxy, mlflow_server: str, tmp_path: Path
) -> None:
    save_dir = make_save_dir(tmp_path / "runs", "a")
    [first] = relog([save_dir])
    [second] = relog([save_dir], force=True)
    assert (first.outcome, second.outcome) == ("relogged", "relogged")
    assert [outcome.save_dir for outcome in reconcile([save_dir])] == [save_dir]  # read and checked through it

    upstream = MlflowClient(mlflow_server)  # read past the proxy: the runs are on the server
    experiments = [e.experiment_id for e in upstream.search_experiments()]
    runs = {r.info.run_id: r.data.tags[STATUS] for r in runs_of(upstream, experiments, logical_run_key(save_dir))}
    assert runs == {first.run_id: "deprecated", second.run_id: ACTIVE}
    assert token_proxied.forwarded > 0 and token_proxied.refused == []


def test_a_wrong_token_is_one_clear_error_asked_once(
    token_proxied: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_dir = make_save_dir(tmp_path / "runs", "a")
    result = cli("relog", save_dir, MLFLOW_TRACKING_TOKEN="tok-wrong")
    assert result.returncode in (1, 2) and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert f"MLflow at {token_proxied.url} did not accept the credentials" in result.stdout + result.stderr
    assert "MLFLOW_TRACKING_TOKEN" in result.stderr and "tok-wrong" not in result.stdout + result.stderr
    assert len(token_proxied.refused) == 1, token_proxied.refused  # asked once: no retries

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-wrong")
    with pytest.raises(TrackingError, match=f"^MLflow at {token_proxied.url} did not accept the credentials"):
        reconcile()
