"""`flexlock-prefect demo`: the whole product on embedded defaults, end to end.

A Prefect server on loopback (unless `PREFECT_API_URL` is set), the project's deployments served
from a subprocess, one run of the example main flow, and the diag deployment that its completion
event triggers, which logs the run to MLflow (a local SQLite store unless `MLFLOW_TRACKING_URI`
is set). Everything the demo writes lives under one root directory (default `./flexlock-demo`).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.settings import get_settings

DIAG_DEPLOYMENT = "diag/train"
DEMO_EXPERIMENT = "flexlock-demo"  # the example config's `project`


@dataclass(frozen=True)
class DemoResult:
    prefect_ui: str
    save_dir: str
    mlflow_run_id: str
    mlflow_ui_command: str


def run_demo(root: str | Path = "flexlock-demo", keep: bool = False, console: Console | None = None) -> DemoResult:
    """Run the example main flow through the served deployments and wait for its diag run."""
    from flexlock_prefect.local import prefect_api, served_deployments, wait_until_idle

    console = console or Console(stderr=True)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    _create_experiment(tracking_uri, DEMO_EXPERIMENT, root / "mlruns")
    with ExitStack() as services:  # Ctrl-C unwinds it: served deployments first, then the server
        with console.status("starting Prefect (a local server unless PREFECT_API_URL is set)…"):
            api_url = services.enter_context(prefect_api(root / "prefect", keep=keep))
        console.print(f"[green]✓[/green] Prefect API at {api_url}")
        log = root / "serve.log"
        runner = services.enter_context(served_deployments(log, {"MLFLOW_TRACKING_URI": tracking_uri}, keep=keep))
        with console.status("serving the example pipeline: train, diag, relog-all, promote, registry-audit…"):
            _wait_for_deployment(DIAG_DEPLOYMENT, log)
        console.print("[green]✓[/green] deployments served (flexlock_prefect.serving.example_pipeline)")
        with console.status("running the example main flow (flexlock_prefect.examples.train)…"):
            from flexlock_prefect.examples.train import train

            save_dir = train(overrides=[f"save_dir={root}/runs/train-${{now:%Y%m%d-%H%M%S-%f}}"])
        console.print(f"[green]✓[/green] main run recorded in {save_dir}/run.lock")
        with console.status("waiting for the diag run that flexlock.run.completed triggers…"):
            run_id = _wait_for_diag(save_dir, log)
        console.print(f"[green]✓[/green] diag logged it as MLflow run {run_id}")
        if not keep:  # stopping the runner before the diag's process exits would cancel the run
            wait_until_idle(runner, get_settings().demo_timeout_s)
    return DemoResult(
        prefect_ui=api_url.removesuffix("/api"),
        save_dir=save_dir,
        mlflow_run_id=run_id,
        mlflow_ui_command=f"mlflow ui --backend-store-uri {tracking_uri}",
    )


def _create_experiment(tracking_uri: str, name: str, artifacts: Path) -> None:
    """The demo's experiment, with its artifacts under the demo root: a local SQLite store would
    otherwise put them in `./mlruns` of whichever process creates the experiment first."""
    from mlflow import MlflowClient

    from flexlock_prefect.tracking.tags import CLASSIC_RUNS_VIEW, MLFLOW_EXPERIMENT_KIND

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(
            name, artifact_location=artifacts.as_uri(), tags={MLFLOW_EXPERIMENT_KIND: CLASSIC_RUNS_VIEW}
        )


def _wait_for_deployment(name: str, log: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    wait_s = get_settings().demo_timeout_s
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(0.5)
    raise FlexlockError(f"deployment {name} was not served within {wait_s:.0f}s (FLEXLOCK_DEMO_TIMEOUT_S): see {log}")


def _wait_for_diag(save_dir: str, log: Path) -> str:
    """The MLflow run id once the triggered diag run of `save_dir` has completed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flexlock_prefect.tracking.supersede import current_active

    wait_s = get_settings().demo_timeout_s
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        diag_id = client.read_deployment_by_name(DIAG_DEPLOYMENT).id
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[diag_id])))
        for run in runs:
            if run.parameters.get("save_dir") != save_dir or not (run.state and run.state.is_final()):
                continue
            if not run.state.is_completed():
                raise FlexlockError(f"the diag run {run.name} ended {run.state.type.value}: see {log}")
            active = current_active(save_dir)
            if active is not None:
                return active.info.run_id
        time.sleep(1)
    raise FlexlockError(
        f"no diag run completed for {save_dir} within {wait_s:.0f}s (FLEXLOCK_DEMO_TIMEOUT_S): see {log}"
    )
