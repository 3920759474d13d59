"""The example pipeline against authenticated servers, as a team runs it.

`prefect server start` demands an auth string (`PREFECT_SERVER_API_AUTH_STRING`) and MLflow runs
its basic-auth app. The served runner holds `PREFECT_API_AUTH_STRING` and logs in to MLflow as
the pipeline's own account; people read with an account that may change nothing. Through that:
a main run, its triggered diag, a relog requested by event and a promotion approved with
`flexlock-prefect approve`; wrong or missing credentials are one clear line; and no canary
credential (the auth string, MLflow passwords and a token, S3 keys, a password inside a URL)
appears on any surface a person or a tool can read afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import TypeVar

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter

from flexlock_prefect import RunLock, storage
from flexlock_prefect.examples import train as example
from flexlock_prefect.local import served_deployments, wait_until_idle
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.registry import history
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import LOCK_DIGEST, SUPERSEDES
from tests.helpers.prefect_api import poll, wait_for_events, wait_for_flow_run, wait_for_flow_runs
from tests.helpers.runs import active_runs_of, cli
from tests.helpers.servers import PREFECT_AUTH_SECRET, AuthApp
from tests.helpers.token_proxy import token_proxy

pytestmark = pytest.mark.integration

ACCOUNT = "pipeline"
"""The runner's MLflow account: it creates the experiment and the models it logs, so MLflow's
auth app gives it MANAGE on those; everyone else keeps the default READ."""
PROJECT = "flexlock-authenticated"
S3_SECRET = f"s3-{uuid.uuid4().hex}"
URL_PASSWORD = f"url-{uuid.uuid4().hex}"
SECRETS_OF_THE_FLOWS = {
    "AWS_SECRET_ACCESS_KEY": S3_SECRET,  # moto takes any key
    "WAREHOUSE_URI": f"postgresql://ml:{URL_PASSWORD}@db.internal:5432/features",
}
"""In the environment of the runner and of this process, which runs the main flows."""
T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    """The example pipeline served against both authenticated servers: its runner and output."""

    runner: Popen
    log: Path
    mlflow: AuthApp


@pytest.fixture(scope="module")
def served(
    auth_prefect_api: str, auth_app: AuthApp, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The runner logs in to MLflow as `pipeline` and holds S3 keys and a secret database URL in
    its environment, which its flow runs inherit, as a worker's would."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        "MLFLOW_TRACKING_URI": auth_app.url,
        "MLFLOW_TRACKING_USERNAME": ACCOUNT,
        "MLFLOW_TRACKING_PASSWORD": auth_app.passwords[ACCOUNT],
        **SECRETS_OF_THE_FLOWS,
    }
    with served_deployments(log, env=env) as runner:
        with get_client(sync_client=True) as client:
            _, ready = poll(lambda: len(client.read_deployments()) >= 5, bool, timeout_s=90)
        assert ready, log.read_text()[-3000:]
        yield Served(runner, log, auth_app)
        wait_until_idle(runner, timeout_s=60)


def _logged(save_dir: str, served: Served, count: int = 1) -> list:
    """The active runs of `save_dir` once its triggered diag (or relog) logged it."""
    active, done = poll(lambda: active_runs_of(save_dir), lambda runs: len(runs) >= count, timeout_s=120, interval_s=1)
    assert done, served.log.read_text()[-3000:]
    return active


def _train(save_dir: Path, input_data: str, *overrides: str) -> str:
    return example.train(
        overrides=[f"input_data={input_data}", f"save_dir={save_dir}", f"project={PROJECT}", *overrides]
    )


def test_main_diag_relog_an_approved_promotion_trace_audit_and_reconcile_go_through_both_authenticated_servers(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = f"auth-{uuid.uuid4().hex[:8]}"
    data = example.prepare_example_data(tmp_path / "data.csv")
    save_dir = _train(tmp_path / "runs" / "a", str(data), f"model_name={model}")
    served.mlflow.log_in(monkeypatch, "reader")  # a person: reads everything, may change nothing
    [first] = _logged(save_dir, served)
    assert first.data.tags[LOCK_DIGEST] == RunLock.load(save_dir).digest

    requested = cli("relog", "--root", str(tmp_path / "runs"), "--via-event", "--main", "train", "--force")
    assert requested.returncode == 0, requested.stderr
    [relog_run] = wait_for_flow_runs("relog-all/train", 1)
    assert relog_run.created_by.type == "AUTOMATION" and relog_run.state.is_completed(), relog_run.state
    [active] = active_runs_of(save_dir)
    assert active.data.tags[SUPERSEDES] == first.info.run_id

    started = cli("promote", model, "1", "--to", "dev")
    assert started.returncode == 0, started.stderr
    flow_run_id = started.stdout.split("flow run ")[1].split()[0]
    wait_for_flow_run(flow_run_id, lambda run: run.state.is_paused())
    assert cli("approve", flow_run_id, "--reviewer", "ana", "--comment", "first model").returncode == 0
    final = wait_for_flow_run(flow_run_id, lambda run: run.state.is_final()).state
    assert final.is_completed(), final
    [moved] = history(model)
    assert (moved.to_state, moved.made_by) == ("dev", f"ana (MLflow account {ACCOUNT})")
    assert f"ana (MLflow account {ACCOUNT})" in cli("history", model).stdout

    with pytest.raises(MlflowException, match="error code 403"):  # the person cannot bypass the flow
        MlflowClient().set_registered_model_alias(model, "prod", "1")
    traced = cli("trace", f"{model}@dev")
    assert traced.returncode == 0 and "ana" in traced.stdout and save_dir in traced.stdout, traced.stderr
    audited = cli("audit", model)
    assert audited.returncode == 0 and "agree" in audited.stdout, audited.stdout + audited.stderr
    as_pipeline = {"MLFLOW_TRACKING_USERNAME": ACCOUNT, "MLFLOW_TRACKING_PASSWORD": served.mlflow.passwords[ACCOUNT]}
    reconciled = cli("reconcile", save_dir, **as_pipeline)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


@pytest.mark.parametrize("given", [None, "flexlock:wrong"], ids=["missing", "wrong"])
def test_missing_or_wrong_prefect_credentials_are_one_line_naming_the_setting(
    auth_prefect_api: str, given: str | None
) -> None:
    result = cli("approve", "00000000-0000-4000-8000-000000000000", PREFECT_API_AUTH_STRING=given or "")
    message = result.stderr
    assert (result.returncode, message.count("\n")) == (2, 1), message
    assert "answered HTTP 401" in message and "set PREFECT_API_AUTH_STRING" in message
    assert "Traceback" not in message and PREFECT_AUTH_SECRET not in message and "wrong" not in message


class Surfaces:
    """Everything readable after the runs, by name: the test searches each for every canary."""

    def __init__(self, canaries: dict[str, str]) -> None:
        self.canaries = canaries
        self.texts: dict[str, str] = {}

    def add(self, name: str, text: object) -> None:
        self.texts[name] = text if isinstance(text, str) else json.dumps(text, default=str)

    def leaks(self) -> list[str]:
        found = ((what, name) for name, text in self.texts.items() for what, v in self.canaries.items() if v in text)
        return [f"{what} in {name}" for what, name in found]


def _every(read: Callable[..., list[T]], page: int = 200) -> list[T]:
    """All that `read(limit=, offset=)` pages through: the API answers the oldest first, a page at a
    time, and the module's server holds the other tests' runs too."""
    found: list[T] = []
    while batch := read(limit=page, offset=len(found)):
        found += batch
    return found


def _prefect_surfaces(surfaces: Surfaces) -> None:
    with get_client(sync_client=True) as client:
        flow_runs = _every(client.read_flow_runs)
        surfaces.add("Prefect flow-run parameters", [r.parameters for r in flow_runs])
        surfaces.add("Prefect flow-run states", [r.state.message if r.state else None for r in flow_runs])
        surfaces.add("Prefect task runs", [r.model_dump() for r in _every(client.read_task_runs)])
        surfaces.add("Prefect artifacts", [a.model_dump() for a in client.read_artifacts()])
        surfaces.add("Prefect logs", [log.message for log in _every(client.read_logs)])
        for prefix in ("flexlock.", "prefect.flow-run.", "prefect.deployment."):  # the API pages by 50
            events = client.read_events(filter=EventFilter(event=EventNameFilter(prefix=[prefix])), limit=50)
            surfaces.add(f"Prefect events {prefix}*", [e.model_dump() for e in events.events])
        surfaces.add("Prefect deployments", [d.model_dump() for d in client.read_deployments()])


def _mlflow_surfaces(surfaces: Surfaces, save_dir: str, tmp_path: Path) -> None:
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = runs_of(client, experiments, logical_run_key(save_dir))
    surfaces.add("MLflow params", [r.data.params for r in runs])
    surfaces.add("MLflow tags", [r.data.tags for r in runs])
    surfaces.add("MLflow metrics", [r.data.metrics for r in runs])
    for run in runs:
        where = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        text = "".join(p.read_bytes().decode(errors="replace") for p in where.rglob("*") if p.is_file())
        surfaces.add(f"MLflow artifacts of {run.info.run_id}", text)


def test_no_credential_reaches_any_surface(
    served: Served, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    canaries = {
        "Prefect auth string": PREFECT_AUTH_SECRET,
        "S3 key": S3_SECRET,
        "password in a URL": URL_PASSWORD,
        "MLflow token": token,
        **{f"MLflow password of {user}": password for user, password in served.mlflow.passwords.items()},
    }
    for name, value in SECRETS_OF_THE_FLOWS.items():
        monkeypatch.setenv(name, value)
    data = example.prepare_example_data(tmp_path / "data.csv")
    storage.write_atomic(f"{s3_bucket}/data.csv", data.read_bytes())
    # A secret reaches the flow through the environment: a flow parameter is stored by Prefect as given.
    save_dir = _train(
        tmp_path / "b", f"{s3_bucket}/data.csv", "model_name=''", "+warehouse.uri=${oc.env:WAREHOUSE_URI}"
    )
    served.mlflow.log_in(monkeypatch, "reader")
    _logged(save_dir, served)
    wait_for_events("flexlock.run.relogged", f"flexlock.run.{logical_run_key(save_dir)}")
    wait_until_idle(served.runner, timeout_s=60)

    surfaces = Surfaces(canaries)
    for path in Path(storage.local_path(save_dir)).rglob("*"):
        if path.is_file():
            surfaces.add(f"save_dir file {path.name}", path.read_bytes().decode(errors="replace"))
    surfaces.add("the runner's output", served.log.read_text())
    # People on a token: a gateway checks it and logs in to MLflow as the pipeline's account.
    gateway = token_proxy(served.mlflow.url, token, upstream_auth=(ACCOUNT, served.mlflow.passwords[ACCOUNT]))
    with gateway as proxy:
        no_password = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
        for args in (["show", save_dir], ["relog", "--force", save_dir], ["verify", save_dir]):
            result = cli(*args, **no_password, MLFLOW_TRACKING_URI=proxy.url, MLFLOW_TRACKING_TOKEN=token)
            assert result.returncode == 0, result.stderr
            surfaces.add(f"flexlock-prefect {args[0]}", result.stdout + result.stderr)
        with_password_in_url = proxy.url.replace("//", f"//ml:{URL_PASSWORD}@")
        refused = cli("relog", "--force", save_dir, **no_password, MLFLOW_TRACKING_URI=with_password_in_url)
    assert refused.returncode != 0
    surfaces.add("an error message", refused.stdout + refused.stderr)
    _prefect_surfaces(surfaces)
    _mlflow_surfaces(surfaces, save_dir, tmp_path / "artifacts")

    assert "<redacted>" in surfaces.texts["save_dir file run.lock"]  # the URL password was there to leak
    assert len(surfaces.texts) >= 20, sorted(surfaces.texts)
    assert surfaces.leaks() == []
