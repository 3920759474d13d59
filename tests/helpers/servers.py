"""Real servers for integration tests: started as subprocesses on loopback, stopped as a group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own process group, ready once `health_url` answers 200.

    Its own process group, because servers like `mlflow server` fork workers that a plain
    terminate would orphan.
    """

    def __init__(
        self,
        command: Sequence[str],
        health_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60,
    ) -> None:
        self.health_url = health_url
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        self.process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._wait_until_healthy(timeout_s)

    def _wait_until_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}; log:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"server not healthy after {timeout_s}s at {self.health_url}; log:\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
