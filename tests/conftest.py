"""Shared fixtures: an isolated stat cache per test, and real servers on loopback: an S3 endpoint
(moto in server mode), a Prefect server (`prefect server start`, SQLite), an MLflow server and
one behind MLflow's basic-auth app.

The Prefect API is opt-in per test: the server runs for the whole session, but only a test that
requests `prefect_api` (directly or through another fixture) sees it; every other test runs with
no Prefect API at all, whatever ran before it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.prefect_api import runs_from_now_on
from tests.helpers.servers import (
    PREFECT_AUTH,
    AuthApp,
    prefect_client_pointed_at,
    prefect_server,
    start_s3_endpoint,
)
from tests.helpers.token_proxy import Proxy, token_proxy

# Never let an AWS client look for credentials or regions beyond loopback.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
# Prefect reads these at import: a private home, no telemetry, no ephemeral API.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
os.environ.pop("PREFECT_API_URL", None)


PREFECT_FIXTURES = {
    "prefect_server_url",
    "prefect_api",
    "module_prefect_api",
    "auth_prefect_api",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `prefect` every test that uses a Prefect server fixture (tests that start or drive a
    Prefect server of their own carry the marker themselves): `.ci/run`'s run on the newest
    Prefect repeats those and the unit tests, and leaves the integration tests that never talk to
    Prefect to the first run, on the same MLflow.

    The `scale` tests (the longest module by far) are moved to the front: xdist hands modules to
    its workers in this order, so one worker starts on them while the other takes the rest,
    instead of the whole run waiting for them at the end."""
    for item in items:
        if PREFECT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.prefect)
    items.sort(key=lambda item: item.get_closest_marker("scale") is None)  # stable: else as collected


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty stat cache, so no test sees another's digests."""
    monkeypatch.setenv("FLEXLOCK_CACHE_DIR", str(tmp_path_factory.mktemp("flexlock-cache")))


@pytest.fixture(autouse=True)
def no_temporary_prefect_server() -> Iterator[None]:
    """Prefect starts a temporary server of its own when an event is emitted with no API
    configured; a test must request `prefect_api` instead, and never leave such a server behind."""
    yield
    server_module = sys.modules.get("prefect.server.api.server")  # not imported: none started
    started = dict(server_module.SubprocessASGIServer._instances) if server_module else {}
    if started:
        server_module.SubprocessASGIServer._instances.clear()
        for server in started.values():
            server.stop()
        pytest.fail("this test started a temporary Prefect server: request the `prefect_api` fixture")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode on a free loopback port, reached through the standard AWS variables."""
    server, endpoint = start_s3_endpoint(tmp_path_factory.mktemp("moto") / "moto.log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket for one test: `s3://<name>`."""
    from flexlock_prefect import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs, _ = storage.filesystem(f"s3://{name}")
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def prefect_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own SQLite database, for the whole
    session; its API URL. Nothing is pointed at it: tests take `prefect_api`."""
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


@pytest.fixture
def prefect_api(prefect_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's Prefect API, for this test only: its flows and clients talk to it through
    `PREFECT_API_URL`, in this process (temporary settings) and in subprocesses (environment).

    `wait_for_flow_runs` counts only the flow runs created during the test. On teardown the
    client's queued events and logs are sent before the settings are restored.
    """
    monkeypatch.setenv("PREFECT_API_URL", prefect_server_url)
    with prefect_client_pointed_at(prefect_server_url), runs_from_now_on():
        yield prefect_server_url


@pytest.fixture(scope="module")
def module_prefect_api(prefect_server_url: str) -> Iterator[str]:
    """The session's Prefect API for the rest of one module, for module-scoped fixtures that use
    it in their own set-up and teardown (served deployments). Until the module ends its later
    tests see the API too, so use it only in a module whose tests either request `prefect_api`
    themselves (none then relies on this) or do not touch Prefect."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server_url)
        with prefect_client_pointed_at(prefect_server_url):
            yield prefect_server_url


@pytest.fixture(scope="module")
def auth_prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` demanding `PREFECT_AUTH` (`PREFECT_SERVER_API_AUTH_STRING`), with this
    process (settings) and its subprocesses (environment) pointed at it and holding the auth
    string, for one module; yields the API URL."""
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    from flexlock_prefect.local import start_prefect_server

    home = tmp_path_factory.mktemp("prefect-auth")
    server, url = start_prefect_server(home, env={"PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH})
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PREFECT_API_URL", url)
            patch.setenv("PREFECT_API_AUTH_STRING", PREFECT_AUTH)
            with temporary_settings({PREFECT_API_AUTH_STRING: PREFECT_AUTH}), prefect_client_pointed_at(url):
                yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[str]:
    """`mlflow server` on a free loopback port: SQLite backend, artifacts proxied to moto S3.

    One worker and no job execution keep start-up near 7 s; the server runs in its own process
    group because it forks, and the whole group is stopped at the end.
    """
    from flexlock_prefect import storage
    from tests.helpers.servers import start_mlflow_server

    bucket = "mlflow-artifacts"
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.mkdir(bucket)
    server, url = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-server"),
        artifacts_destination=f"s3://{bucket}",
        env={"MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", url)
        yield url
    server.stop()


@pytest.fixture
def token_proxied(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """The session's MLflow server behind a bearer-token proxy (`tests/helpers/token_proxy.py`,
    a new token per test), with this test's clients holding it in `MLFLOW_TRACKING_TOKEN`."""
    with token_proxy(mlflow_server, f"tok-{uuid.uuid4().hex}") as proxy:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", proxy.token)
        yield proxy


AUTH_CONFIG = """[mlflow]
default_permission = READ
database_uri = sqlite:///{home}/auth.db
admin_username = admin
admin_password = {password}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""


@pytest.fixture(scope="session")
def auth_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthApp]:
    """MLflow's basic-auth app on loopback with the users `admin`, `reader`, `editor`, `promoter`
    and `pipeline`, and a model and an experiment `churn` (version 1, one run) that all but the
    admin may only read (the default permission). Give a user more on a model with
    `tests.helpers.servers.grant`; log in as someone with `as_user`. Password checks are cached
    for 60 s (`auth_cache_ttl_seconds`, as `deployments/mlflow-auth.ini` has it): ~11 ms a
    request instead of ~300 ms."""
    import requests
    from mlflow import MlflowClient

    from tests.helpers.servers import start_mlflow_server

    home = tmp_path_factory.mktemp("mlflow-auth")
    passwords = {user: uuid.uuid4().hex for user in ("admin", "reader", "editor", "promoter", "pipeline")}
    (home / "auth.ini").write_text(AUTH_CONFIG.format(home=home, password=passwords["admin"]))
    server, url = start_mlflow_server(
        home,
        artifacts_destination=(home / "artifacts").as_uri(),
        app_name="basic-auth",
        env={"MLFLOW_AUTH_CONFIG_PATH": str(home / "auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex},
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", passwords["admin"])
            for user, password in passwords.items():
                if user != "admin":
                    created = requests.post(
                        f"{url}/api/2.0/mlflow/users/create",
                        json={"username": user, "password": password},
                        auth=("admin", passwords["admin"]),
                        timeout=30,
                    )
                    created.raise_for_status()
            client = MlflowClient(url)
            client.create_registered_model("churn")
            run = client.create_run(client.create_experiment("churn"))
            client.create_model_version("churn", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        yield AuthApp(url, passwords)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def auth_server(auth_app: AuthApp) -> tuple[str, str]:
    """The basic-auth app's URL and the password of `reader`, who may only read."""
    return auth_app.url, auth_app.passwords["reader"]
