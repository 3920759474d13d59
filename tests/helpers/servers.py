"""Real servers for integration tests and benchmarks: an S3 endpoint (moto in server mode) and a
Prefect server that this process's client talks to."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flexlock_prefect.local import ServerProcess, free_port, start_prefect_server

__all__ = ["free_port", "prefect_server_for_this_process", "start_s3_endpoint"]


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
def prefect_server_for_this_process(home: Path) -> Iterator[str]:
    """`prefect server start` (SQLite under `home`, loopback, no UI), with this process's client
    pointed at it (temporary settings, and `PREFECT_API_URL` for subprocesses) and the flow
    heartbeat off: a trivial flow run then costs ~0.2 s instead of ~1.1 s.

    On the way out the client's last events and flow-run logs are sent while the server still
    answers, then the server's process group is stopped.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    server, url = start_prefect_server(home)
    try:
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            try:
                yield url
            finally:
                _flush_client()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _flush_client() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    try:
        EventsWorker.drain_all(timeout=10)
        APILogHandler().flush()
    except Exception as exc:  # noqa: BLE001 - best effort on the way out: a lost log line must not hide results
        print(f"(could not flush the client's events/logs: {exc})", file=sys.stderr)
