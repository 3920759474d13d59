"""The scale-out configuration on one machine: PostgreSQL, a Prefect server on it, `process`
workers pulling from the project's work pool, and an MLflow tracking server on PostgreSQL with
artifacts on S3.

These are the plain commands of the README's "Running in production", started on loopback with
free ports for the `scale` test and `benchmarks/scale.py`. In production each process runs on a
host or in a container of its own (`deployments/compose.yaml`); nothing here is needed there.

Both servers authenticate, as in production: the Prefect server demands an auth string and the
MLflow server runs MLflow's basic-auth app (`deployments/mlflow-auth.ini`), with the workers
logging in as the account `deployments/mlflow_account.py` creates. Every credential is generated
for the stack and travels only in environment variables: the database password as libpq's
`PGPASSWORD` (read by both asyncpg and psycopg2), so no connection URL, command line or file
carries it.
"""

from __future__ import annotations

import configparser
import dataclasses
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.local import ServerProcess, free_port, start_prefect_server
from flexlock_prefect.pipeline import DEFAULT_QUEUE, DIAG_QUEUE
from tests.helpers.servers import start_mlflow_server

DATABASE_USER = "flexlock"
DATABASES = ("prefect", "mlflow", "mlflow_auth")
WORKER_ACCOUNT = "flexlock"
"""The MLflow account of the workers, as in `deployments/compose.yaml`."""


def postgres_bindir() -> Path:
    """The directory of `initdb` and `postgres`: Debian keeps them out of PATH, per major version."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    found = candidates[-1] if candidates else shutil.which("initdb")
    if not found:
        raise FlexlockError("PostgreSQL is not installed: install it (Debian: `apt-get install -y postgresql`)")
    return Path(found).parent


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster on loopback; `url()` never holds the password, `env` does."""

    port: int
    password: str = field(repr=False)
    user: str = DATABASE_USER
    pid: int = 0  # the postmaster's, which leads the cluster's process group

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}

    def create_database(self, name: str) -> None:
        created = subprocess.run(
            [str(postgres_bindir() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
        )
        if created.returncode != 0:
            raise FlexlockError(f"cannot create the database {name}: {created.stderr.strip()}")


@contextmanager
def postgres(log_dir: Path) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster with a random password on a free loopback port, removed after.

    Durability is off (`fsync`, `synchronous_commit`): the cluster lives as long as a test or a
    benchmark. As root it runs as the `postgres` account, since PostgreSQL refuses root; its data
    directory is then a fresh temporary directory that account owns.
    """
    bindir = postgres_bindir()
    account = "postgres" if os.geteuid() == 0 else None
    data = Path(tempfile.mkdtemp(prefix="flexlock-postgres-"))
    cluster = Postgres(port=free_port(), password=secrets.token_urlsafe(16))
    try:
        password_file = data / "password"
        password_file.write_text(cluster.password)
        if account:
            shutil.chown(data, account)
            shutil.chown(password_file, account)
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data / "cluster"), "-U", cluster.user, "-E", "UTF8", "--no-sync"]
            + ["--auth=scram-sha-256", f"--pwfile={password_file}"],
            capture_output=True,
            text=True,
            user=account,
        )
        password_file.unlink()
        if initdb.returncode != 0:
            raise FlexlockError(f"initdb failed: {initdb.stderr.strip()}")
        server = ServerProcess(
            [str(bindir / "postgres"), "-D", str(data / "cluster"), "-h", "127.0.0.1", "-p", str(cluster.port)]
            + ["-k", str(data), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=300"],
            log_path=log_dir / "postgres.log",
            ready=lambda: _accepts_connections(bindir, cluster.port),
            user=account,
        )
        try:
            yield dataclasses.replace(cluster, pid=server.process.pid)
        finally:
            server.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _accepts_connections(bindir: Path, port: int) -> bool:
    return subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0


def _work_pools(project_root: Path) -> list[dict[str, str]]:
    deployments = yaml.safe_load((project_root / "deployments" / "prefect.yaml").read_text())["deployments"]
    return [d["work_pool"] for d in deployments]


def work_pool_name(project_root: Path) -> str:
    """The work pool the project's deployments name in `deployments/prefect.yaml`."""
    [pool] = {p["name"] for p in _work_pools(project_root)}
    return pool


def priority_queue_name(project_root: Path) -> str:
    """The work queue of the diag, relog-all and promote deployments, served before the default one."""
    [queue] = {p["work_queue_name"] for p in _work_pools(project_root)} - {"default"}
    return queue


def deploy_project(project_root: Path, env: Mapping[str, str]) -> None:
    """Create the process work pool and its priority queue, then `prefect deploy` every deployment
    of `prefect.yaml` (the commands at the top of that file)."""
    pool = work_pool_name(project_root)
    for args in (
        ["work-pool", "create", pool, "--type", "process", "--overwrite"],
        ["work-queue", "create", priority_queue_name(project_root), "--pool", pool, "--priority", "1"],
        ["deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
    ):
        setup_step(["-m", "prefect", "--no-prompt", *args], f"`prefect {' '.join(args)}`", project_root, env)


def setup_step(args: list[str], what: str, project_root: Path, env: Mapping[str, str]) -> None:
    """`python ARGS` from the project root with `env`, once; a FlexlockError with its output if it fails."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=project_root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise FlexlockError(f"{what} failed:\n{done.stdout}{done.stderr}")


def start_worker(log_path: Path, pool: str, env: Mapping[str, str], limit: int, poll_s: float) -> ServerProcess:
    """`prefect worker start` for a `process` pool, running at most `limit` flow runs at once and
    polling every `poll_s` seconds; ready once its health endpoint (on loopback) answers."""
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
        + ["--limit", str(limit), "--with-healthcheck", "--name", log_path.stem],
        health_url=f"http://127.0.0.1:{port}/health",
        log_path=log_path,
        env={
            **env,
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
            "PREFECT_WORKER_QUERY_SECONDS": str(poll_s),
        },
        timeout_s=120,
    )


def start_warm_runner(log_path: Path, queue: str, env: Mapping[str, str], limit: int, poll_s: float) -> ServerProcess:
    """`flexlock-prefect serve --queue <queue>`: that work queue's deployments served warm, at
    most `limit` flow runs at once, polling every `poll_s` seconds; ready once its health
    endpoint (Prefect's runner webserver, on loopback) answers."""
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "flexlock_prefect", "serve", "--queue", queue, "--limit", str(limit)],
        health_url=f"http://127.0.0.1:{port}/health",
        log_path=log_path,
        env={
            **env,
            "PREFECT_RUNNER_SERVER_ENABLE": "true",
            "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
            "PREFECT_RUNNER_SERVER_PORT": str(port),
            "PREFECT_RUNNER_POLL_FREQUENCY": str(poll_s),
        },
        timeout_s=120,
    )


@dataclass(frozen=True)
class ScaleStack:
    """The running stack: what a client needs in its environment to use it (`env`, which holds
    the Prefect auth string and the workers' MLflow account)."""

    prefect_api_url: str
    mlflow_tracking_uri: str
    postgres: Postgres
    env: dict[str, str] = field(repr=False)
    process_groups: dict[str, list[int]] = field(default_factory=dict)
    """The stack's processes by part ("PostgreSQL", "Prefect server", ...): the process groups
    each part runs in, for the benchmark's CPU accounting."""

    def prefect_client_settings(self) -> AbstractContextManager[object]:
        """Inside the block this process's Prefect client talks to the stack's server with its
        auth string (temporary settings: Prefect reads its environment once, at import)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(
            {PREFECT_API_URL: self.prefect_api_url, PREFECT_API_AUTH_STRING: self.env["PREFECT_API_AUTH_STRING"]}
        )


def mlflow_auth_config(project_root: Path, path: Path, database_url: str) -> Path:
    """`deployments/mlflow-auth.ini` with its database at `database_url`, written to `path`."""
    config = configparser.ConfigParser()
    config.read(project_root / "deployments" / "mlflow-auth.ini")
    config["mlflow"]["database_uri"] = database_url
    with path.open("w") as file:
        config.write(file)
    return path


def create_worker_account(project_root: Path, env: Mapping[str, str]) -> None:
    """`deployments/mlflow_account.py` with `env`: the admin creates the workers' account."""
    setup_step(["deployments/mlflow_account.py"], "deployments/mlflow_account.py", project_root, env)


@contextmanager
def scale_stack(
    home: Path,
    project_root: Path,
    artifacts_destination: str,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
    runs_per_worker: int = 4,
    mlflow_workers: int = 2,
    poll_s: float = 2,
    warm_queues: Sequence[str] = (),
) -> Iterator[ScaleStack]:
    """PostgreSQL, a Prefect server and an MLflow server on it, both authenticating with
    credentials made for this stack, the project deployed to its work pool and `workers` process
    workers; everything is stopped, last started first, at the end. Each queue of `warm_queues`
    ("default", "diag") is served instead by `workers` runners of `flexlock-prefect serve --queue`
    (each running at most `runs_per_worker` flow runs, forked warm), which take its deployments
    over from the pool; the workers run what is left, and do not start when nothing is.

    `env` reaches every process (S3 credentials and endpoint, settings); the stack adds
    `PREFECT_API_URL`, `PREFECT_API_AUTH_STRING`, `MLFLOW_TRACKING_URI` and the workers' MLflow
    account, which workers pass on to their flow runs.
    """
    home.mkdir(parents=True, exist_ok=True)
    auth_string = f"flexlock:{secrets.token_urlsafe(16)}"
    admin = ("admin", secrets.token_urlsafe(16))
    with ExitStack() as stack:
        cluster = stack.enter_context(postgres(home))
        for database in DATABASES:
            cluster.create_database(database)
        prefect_server, api_url = start_prefect_server(
            home / "prefect",
            database_url=cluster.url("prefect", "postgresql+asyncpg"),
            env={**cluster.env, "PREFECT_SERVER_API_AUTH_STRING": auth_string},
        )
        stack.callback(prefect_server.stop)
        auth_config = mlflow_auth_config(project_root, home / "mlflow-auth.ini", cluster.url("mlflow_auth"))
        mlflow_server, tracking_uri = start_mlflow_server(
            home / "mlflow",
            artifacts_destination,
            backend_store_uri=cluster.url("mlflow"),
            workers=mlflow_workers,
            app_name="basic-auth",
            env={
                **(env or {}),
                **cluster.env,
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            },
        )
        stack.callback(mlflow_server.stop)
        client_env = {
            **(env or {}),
            "PREFECT_API_URL": api_url,
            "PREFECT_API_AUTH_STRING": auth_string,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_TRACKING_USERNAME": WORKER_ACCOUNT,
            "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(16),
        }
        create_worker_account(
            project_root,
            {**client_env, "MLFLOW_AUTH_ADMIN_USERNAME": admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1]},
        )
        deploy_project(project_root, client_env)
        pool = work_pool_name(project_root)
        process_groups = {
            "PostgreSQL": [cluster.pid],
            "Prefect server": [prefect_server.process.pid],
            "MLflow server": [mlflow_server.process.pid],
        }

        def keep(part: str, process: ServerProcess) -> None:
            stack.callback(process.stop)
            process_groups.setdefault(part, []).append(process.process.pid)

        for queue in warm_queues:
            for index in range(workers):
                runner = start_warm_runner(
                    home / f"runner-{queue}-{index}.log", queue, client_env, runs_per_worker, poll_s
                )
                keep(f"warm runners of {queue!r} and their flow runs", runner)
        if set(warm_queues) != {DEFAULT_QUEUE, DIAG_QUEUE}:
            for index in range(workers):
                worker = start_worker(home / f"worker-{index}.log", pool, client_env, runs_per_worker, poll_s)
                keep("process workers and their flow runs", worker)
        yield ScaleStack(api_url, tracking_uri, cluster, client_env, process_groups)
