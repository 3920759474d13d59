"""Real servers for integration tests and benchmarks: the library's loopback server helpers and an
S3 endpoint (moto in server mode)."""

from __future__ import annotations

import sys
from pathlib import Path

from flexlock_prefect.local import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port", "start_s3_endpoint"]


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
