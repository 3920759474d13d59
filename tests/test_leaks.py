"""No credential leaks: the example pipeline runs against a Prefect server that wants an auth
string and an MLflow server behind a token proxy, with S3 keys and a password inside a config URL,
and none of those canaries appears on any surface a person or a tool can read afterwards."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter

from flexlock_prefect import storage
from flexlock_prefect.examples import train as example
from flexlock_prefect.local import served_deployments, wait_until_idle
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.prefect_api import poll, wait_for_events
from tests.helpers.runs import cli
from tests.helpers.servers import PREFECT_AUTH_SECRET
from tests.helpers.token_proxy import Proxy

pytestmark = pytest.mark.integration

S3_SECRET = f"s3-{uuid.uuid4().hex}"
URL_PASSWORD = f"url-{uuid.uuid4().hex}"
CANARIES = {"Prefect auth string": PREFECT_AUTH_SECRET, "S3 key": S3_SECRET, "password in a URL": URL_PASSWORD}


class Surfaces:
    """Everything readable after the run, by name: the test searches each for every canary."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, name: str, text: object) -> None:
        self.texts[name] = text if isinstance(text, str) else json.dumps(text, default=str)

    def leaks(self) -> list[str]:
        return [f"{what} in {name}" for name, text in self.texts.items() for what, v in CANARIES.items() if v in text]


def _prefect_surfaces(surfaces: Surfaces) -> None:
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs()
        surfaces.add("Prefect flow-run parameters", [r.parameters for r in flow_runs])
        surfaces.add("Prefect flow-run states", [r.state.message if r.state else None for r in flow_runs])
        surfaces.add("Prefect task runs", [r.model_dump() for r in client.read_task_runs()])
        surfaces.add("Prefect artifacts", [a.model_dump() for a in client.read_artifacts()])
        surfaces.add("Prefect logs", [log.message for log in client.read_logs(limit=200)])
        for prefix in ("flexlock.", "prefect.flow-run.", "prefect.deployment."):  # the API pages by 50
            events = client.read_events(filter=EventFilter(event=EventNameFilter(prefix=[prefix])), limit=50)
            surfaces.add(f"Prefect events {prefix}*", [e.model_dump() for e in events.events])
        surfaces.add("Prefect deployments", [d.model_dump() for d in client.read_deployments()])


def _mlflow_surfaces(surfaces: Surfaces, upstream: MlflowClient, save_dir: str, tmp_path: Path) -> None:
    experiments = [e.experiment_id for e in upstream.search_experiments()]
    runs = runs_of(upstream, experiments, logical_run_key(save_dir))
    surfaces.add("MLflow params", [r.data.params for r in runs])
    surfaces.add("MLflow tags", [r.data.tags for r in runs])
    surfaces.add("MLflow metrics", [r.data.metrics for r in runs])
    for run in runs:
        where = Path(upstream.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        text = "".join(p.read_bytes().decode(errors="replace") for p in where.rglob("*") if p.is_file())
        surfaces.add(f"MLflow artifacts of {run.info.run_id}", text)


def test_no_credential_reaches_any_surface(
    auth_prefect_api: str,
    token_proxied: Proxy,
    mlflow_server: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)  # moto takes any key
    monkeypatch.setitem(CANARIES, "MLflow token", token_proxied.token)
    data = example.prepare_example_data(tmp_path / "data.csv")
    storage.write_atomic(f"{s3_bucket}/data.csv", data.read_bytes())
    log = tmp_path / "serve.log"
    overrides = [f"input_data={s3_bucket}/data.csv", f"save_dir={tmp_path}/runs/a", "model_name=''"]
    # A secret reaches the flow through the environment: a flow parameter is stored by Prefect as given.
    monkeypatch.setenv("WAREHOUSE_URI", f"postgresql://ml:{URL_PASSWORD}@db.internal:5432/features")
    overrides.append("+warehouse.uri=${oc.env:WAREHOUSE_URI}")
    with served_deployments(log) as runner:
        with get_client(sync_client=True) as client:
            _, served = poll(lambda: len(client.read_deployments()) >= 3, bool, timeout_s=90)
        assert served, log.read_text()[-3000:]
        save_dir = example.train(overrides=overrides)
        upstream = MlflowClient(mlflow_server)

        def active() -> list:
            experiments = [e.experiment_id for e in upstream.search_experiments()]
            runs = runs_of(upstream, experiments, logical_run_key(save_dir))
            return [r for r in runs if r.data.tags.get(STATUS) == ACTIVE]

        _, logged = poll(active, bool, timeout_s=120, interval_s=1)
        wait_until_idle(runner, timeout_s=60)
    assert logged, log.read_text()[-3000:]
    wait_for_events("flexlock.run.relogged", f"flexlock.run.{logical_run_key(save_dir)}")

    surfaces = Surfaces()
    for path in Path(storage.local_path(save_dir)).rglob("*"):
        if path.is_file():
            surfaces.add(f"save_dir file {path.name}", path.read_bytes().decode(errors="replace"))
    surfaces.add("the runner's output", log.read_text())
    for args in (["show", save_dir], ["relog", "--force", save_dir], ["verify", save_dir]):
        result = cli(*args)
        surfaces.add(f"flexlock-prefect {args[0]}", result.stdout + result.stderr)
    refused = cli(
        "relog",
        "--force",
        save_dir,
        MLFLOW_TRACKING_TOKEN="tok-wrong",
        MLFLOW_TRACKING_URI=token_proxied.url.replace("//", f"//ml:{URL_PASSWORD}@"),
    )
    assert refused.returncode != 0
    surfaces.add("an error message", refused.stdout + refused.stderr)
    _prefect_surfaces(surfaces)
    _mlflow_surfaces(surfaces, MlflowClient(mlflow_server), save_dir, tmp_path / "artifacts")

    assert "<redacted>" in surfaces.texts["save_dir file run.lock"]  # the URL password was there to leak
    assert len(surfaces.texts) >= 20, sorted(surfaces.texts)
    assert surfaces.leaks() == []
