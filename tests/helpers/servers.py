"""Real servers for integration tests and benchmarks: an S3 endpoint (moto in server mode), an
MLflow tracking server, and a Prefect server with the means to point this process's Prefect
client at it for a while."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flexlock_prefect.local import ServerProcess, free_port, start_prefect_server

if TYPE_CHECKING:
    import pytest

__all__ = [
    "AuthApp",
    "as_user",
    "free_port",
    "grant",
    "prefect_client_pointed_at",
    "prefect_server",
    "prefect_server_for_this_process",
    "start_mlflow_server",
    "start_s3_endpoint",
]

PREFECT_AUTH_SECRET = f"pw-{uuid.uuid4().hex}"
PREFECT_AUTH = f"flexlock:{PREFECT_AUTH_SECRET}"
"""The auth string of the `auth_prefect_api` fixture's server, made anew each session."""


def start_s3_endpoint(log_path: Path) -> tuple[ServerProcess, str]:
    """moto in server mode on a free loopback port; returns it and its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        health_url=f"{endpoint}/moto-api/",
        log_path=log_path,
    )
    return server, endpoint


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` (SQLite under `home`, loopback, no UI); yields its API URL.

    Nothing in this process is pointed at it: see `prefect_client_pointed_at`. On the way out the
    server's process group is stopped.
    """
    server, url = start_prefect_server(home)
    try:
        yield url
    finally:
        server.stop()


@contextmanager
def prefect_client_pointed_at(url: str) -> Iterator[str]:
    """This process's Prefect client talks to `url` inside the block (temporary settings, so
    only this thread's context), with the flow heartbeat off: a trivial flow run then costs
    ~0.2 s instead of ~1.1 s. Subprocesses need `PREFECT_API_URL` in their environment besides.

    On the way out the client's last events and flow-run logs are sent while the settings still
    name the server, so nothing queued in the block is sent later, or to another API.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        try:
            yield url
        finally:
            _flush_client()


@contextmanager
def prefect_server_for_this_process(home: Path) -> Iterator[str]:
    """`prefect server start` with this whole process pointed at it until the block ends: the
    client (`prefect_client_pointed_at`) and subprocesses (`PREFECT_API_URL` in `os.environ`).

    For benchmarks, which own their process; tests take the `prefect_api` fixture instead, which
    points the process at the session's server for one test only.
    """
    with prefect_server(home) as url:
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            with prefect_client_pointed_at(url):
                yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def _flush_client() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    try:
        EventsWorker.drain_all(timeout=10)
        APILogHandler().flush()
    except Exception as exc:  # noqa: BLE001 - best effort on the way out: a lost log line must not hide results
        print(f"(could not flush the client's events/logs: {exc})", file=sys.stderr)


def start_mlflow_server(
    home: Path,
    artifacts_destination: str,
    backend_store_uri: str | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120,
    app_name: str | None = None,
) -> tuple[ServerProcess, str]:
    """`mlflow server` on a free loopback port, proxying artifacts to `artifacts_destination`;
    returns its tracking URI.

    The backend is SQLite under `home` unless `backend_store_uri` names another; it is passed as
    `MLFLOW_BACKEND_STORE_URI` so that nothing secret shows on the command line. Job execution is
    off: it needs an extra service and costs start-up time (~7 s instead of ~13 s with one worker).
    `app_name="basic-auth"` starts MLflow's authentication app (its config from
    `MLFLOW_AUTH_CONFIG_PATH` in `env`; it needs Flask-WTF, from the `mlflow[auth]` extra).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(
        [*command, "--workers", str(workers), *(["--app-name", app_name] if app_name else [])],
        health_url=f"{url}/health",
        log_path=home / "mlflow.log",
        env={
            "MLFLOW_BACKEND_STORE_URI": backend_store_uri or f"sqlite:///{home}/mlflow.db",
            "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **(env or {}),
        },
        timeout_s=timeout_s,
    )
    return server, url


def as_user(monkeypatch: pytest.MonkeyPatch, url: str, user: str, password: str) -> None:
    """MLflow clients made after this call talk to `url` as `user` (for the rest of the test)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


@dataclass(frozen=True)
class AuthApp:
    """An MLflow server behind its basic-auth app: its URL and each user's password."""

    url: str
    passwords: Mapping[str, str]

    def log_in(self, monkeypatch: pytest.MonkeyPatch, user: str) -> None:
        """MLflow clients made after this call talk to the server as `user` (`as_user`)."""
        as_user(monkeypatch, self.url, user, self.passwords[user])


def grant(app: AuthApp, user: str, model: str, permission: str) -> None:
    """The admin gives `user` `permission` (READ, EDIT, MANAGE) on the registered model `model`,
    through the auth app's grant endpoint (MLflow 3.17)."""
    import requests

    granted = requests.post(
        f"{app.url}/api/3.0/mlflow/users/permissions/grant",
        json={"username": user, "resource_type": "registered_model", "resource_id": model, "permission": permission},
        auth=("admin", app.passwords["admin"]),
        timeout=30,
    )
    granted.raise_for_status()
