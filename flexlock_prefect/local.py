"""Local services on loopback: a Prefect server started on demand and the project's deployments
served from a subprocess (the demo and `flexlock-prefect serve` start them from here; the tests
and benchmarks build their servers on `ServerProcess` too).

Every process is started in its own process group and stopped as a group, because servers like
`prefect server start` and `mlflow server` fork workers that a plain terminate would orphan.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from flexlock_prefect.exceptions import FlexlockError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own process group, ready once `health_url` answers 200 (or, for
    servers that speak no HTTP, once `ready()` is true). `user` runs it as another account, for
    servers such as PostgreSQL that refuse to run as root."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        health_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60,
        user: str | None = None,
    ) -> None:
        if (health_url is None) == (ready is None):
            raise TypeError("ServerProcess needs exactly one of health_url and ready")
        self.name = command[2] if list(command[1:2]) == ["-m"] else Path(command[0]).name
        self.ready = ready or (lambda: _answers_ok(health_url))
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        self.process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            user=user,
        )
        self._wait_until_ready(timeout_s)

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FlexlockError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise FlexlockError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_prefect_server(
    home: Path,
    ui: bool = False,
    timeout_s: float = 120,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[ServerProcess, str]:
    """`prefect server start` on a free loopback port; returns its API URL.

    Its database is SQLite under `home` unless `database_url` names another (PostgreSQL:
    `postgresql+asyncpg://user@host:port/db`, the password in `env` as `PGPASSWORD`, never in the URL).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(
        command if ui else [*command, "--no-ui"],
        health_url=f"{url}/health",
        log_path=home / "server.log",
        env={
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # `--port` does not move the UI: without this it talks to the API on port 4200.
            "PREFECT_UI_API_URL": url,
            **(env or {}),
        },
        timeout_s=timeout_s,
    )
    return server, url


@contextmanager
def prefect_api(home: Path, keep: bool = False) -> Iterator[str]:
    """The configured Prefect API (`PREFECT_API_URL`), or a local server (with its UI) started for
    the block and stopped after it unless `keep`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server, url = start_prefect_server(home, ui=True)
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            os.environ["PREFECT_API_URL"] = url
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if not keep:
            server.stop()


@contextmanager
def served_deployments(
    log_path: Path, env: Mapping[str, str] | None = None, keep: bool = False, warm: bool = True
) -> Iterator[subprocess.Popen]:
    """The example pipeline served in a subprocess (`python -m flexlock_prefect.serving`, polling
    every second; `warm=False`: each flow run in a new interpreter), stopped when the block ends
    unless `keep`."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flexlock_prefect.serving", *([] if warm else ["--cold"])],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        try:
            yield process
        finally:
            if not keep and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def wait_until_idle(process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until a served runner has no flow-run process left; False if one outlived `timeout_s`.

    A runner told to stop cancels every flow run whose process it still tracks, even one whose
    state is already final (Prefect 3.9 does, for a run that finished a moment earlier but whose
    process was still flushing its logs). So whoever stops the runner after its last run
    completed waits here first. The children are read from Linux's `/proc`; elsewhere there is
    nothing to read and this returns at once.
    """
    deadline = time.monotonic() + timeout_s
    while _flow_run_pids(process.pid):
        if time.monotonic() > deadline or process.poll() is not None:
            return False
        time.sleep(0.2)
    return True


def _flow_run_pids(pid: int) -> list[int]:
    """The flow-run processes of a runner: its children but the helpers multiprocessing keeps for
    as long as it lives (the resource tracker of spawned runs, the fork server of warm ones,
    whose own children are the flow runs: `flexlock_prefect.warm`)."""
    pids: list[int] = []
    for child in _child_pids(pid):
        role = _multiprocessing_helper(child)
        if role == "forkserver":
            pids += _child_pids(child)
        elif role is None:
            pids.append(child)
    return pids


def _multiprocessing_helper(pid: int) -> str | None:
    """ "forkserver" or "resource_tracker" for those processes of multiprocessing's, else None."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it exited meanwhile
        return None
    for role in ("forkserver", "resource_tracker"):
        if f"multiprocessing.{role}".encode() in command:
            return role
    return None


def _child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return children
