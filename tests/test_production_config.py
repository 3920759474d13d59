"""The container form of the scale-out configuration (`deployments/compose.yaml`) says what the
tested plain commands do, and keeps every credential out of the repository.

No container engine runs here: the `scale` test drives the same processes started directly, and
`deployments/mlflow_account.py` (the `deploy` step's account) runs against the tests' auth app.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import requests
import yaml

from flexlock_prefect.pipeline import DIAG_QUEUE
from tests.helpers.scaleout import work_pool_name
from tests.helpers.servers import AuthApp

ROOT = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|AUTH_STRING", re.IGNORECASE)
ENVIRONMENT_REFERENCE = re.compile(r"^\$\{[A-Z_]+(:[?-][^}]*)?\}$")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "deployments" / "compose.yaml").read_text())["services"]


def test_compose_runs_postgres_a_prefect_server_workers_and_an_mlflow_server(services: dict) -> None:
    assert set(services) == {"postgres", "prefect-server", "mlflow", "worker", "diag-runner", "deploy"}
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("${")


def test_compose_workers_pull_from_the_work_pool_the_deployments_name(services: dict) -> None:
    command = services["worker"]["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == work_pool_name(ROOT)
    assert command[command.index("--type") + 1] == "process"
    assert "deployments/prefect.yaml" in " ".join(services["deploy"]["command"])


def test_compose_serves_the_diag_queue_warm_beside_the_workers(services: dict) -> None:
    command = services["diag-runner"]["command"]
    assert command[:2] == ["flexlock-prefect", "serve"] and "--cold" not in command
    assert command[command.index("--queue") + 1] == DIAG_QUEUE
    assert services["diag-runner"]["environment"] == services["worker"]["environment"]


def test_compose_takes_every_credential_from_the_environment(services: dict) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert ENVIRONMENT_REFERENCE.match(str(value)), f"{name}: {key} must come from the environment"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"{name}: {key} holds a credential in a URL"


def test_compose_publishes_ports_on_loopback_only(services: dict) -> None:
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published)


def test_compose_servers_authenticate_and_clients_log_in(services: dict) -> None:
    prefect, mlflow = services["prefect-server"]["environment"], services["mlflow"]["environment"]
    assert ENVIRONMENT_REFERENCE.match(prefect["PREFECT_SERVER_API_AUTH_STRING"])
    assert services["mlflow"]["command"][-2:] == ["--app-name", "basic-auth"]
    [workdir] = re.findall(r"^WORKDIR (\S+)$", (ROOT / "deployments" / "Dockerfile").read_text(), re.MULTILINE)
    config = ROOT / PurePosixPath(mlflow["MLFLOW_AUTH_CONFIG_PATH"]).relative_to(workdir)
    assert config.is_file() and "MLFLOW_FLASK_SERVER_SECRET_KEY" in mlflow
    for client in ("worker", "diag-runner", "deploy"):
        environment = services[client]["environment"]
        assert environment["PREFECT_API_AUTH_STRING"] == prefect["PREFECT_SERVER_API_AUTH_STRING"]
        assert environment["MLFLOW_TRACKING_USERNAME"] == "flexlock" and "MLFLOW_TRACKING_PASSWORD" in environment
    assert "mlflow_account.py" in " ".join(services["deploy"]["command"])


def test_the_mlflow_auth_config_lets_people_read_and_holds_no_secret() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "deployments" / "mlflow-auth.ini")
    settings = config["mlflow"]
    assert settings["default_permission"] == "READ" and "admin_password" not in settings
    assert "@" in settings["database_uri"] and ":" not in settings["database_uri"].split("//")[1].split("@")[0]


@pytest.mark.integration
def test_the_account_script_creates_the_workers_account_then_rotates_its_password(auth_app: AuthApp) -> None:
    env = {
        "MLFLOW_TRACKING_URI": auth_app.url,
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": auth_app.passwords["admin"],
        "MLFLOW_TRACKING_USERNAME": f"worker-{uuid.uuid4().hex[:8]}",
    }
    said = []
    for password in (uuid.uuid4().hex, uuid.uuid4().hex):
        done = subprocess.run(
            [sys.executable, str(ROOT / "deployments" / "mlflow_account.py")],
            env={**os.environ, **env, "MLFLOW_TRACKING_PASSWORD": password},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and password not in done.stdout + done.stderr, done.stderr
        said.append(done.stdout.strip().split(": ")[-1])
    assert said == ["created", "password set"]
    current = requests.get(
        f"{auth_app.url}/api/2.0/mlflow/users/current", auth=(env["MLFLOW_TRACKING_USERNAME"], password), timeout=30
    )
    assert current.status_code == 200, current.text
