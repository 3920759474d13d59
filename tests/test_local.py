"""The local services that `demo` and `serve` start: the Prefect server's UI talks to its own API,
and the served runner is stopped only once its flow-run processes have exited."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flexlock_prefect.local import _child_pids, start_prefect_server, wait_until_idle


@pytest.mark.integration
@pytest.mark.prefect
def test_the_ui_of_a_server_on_a_free_port_talks_to_that_servers_api(tmp_path: Path) -> None:
    server, url = start_prefect_server(tmp_path / "prefect", ui=True)
    try:
        with urllib.request.urlopen(url.removesuffix("/api") + "/ui-settings", timeout=10) as response:
            settings = json.load(response)
    finally:
        server.stop()
    assert settings["api_url"] == url


@contextmanager
def started(script: str) -> Iterator[subprocess.Popen]:
    """A stand-in runner running `script`, once it has a child; told to stop (a line on stdin) after."""
    runner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, text=True)
    try:
        while not _child_pids(runner.pid):
            assert runner.poll() is None
        yield runner
    finally:
        runner.communicate("the runner stops\n", timeout=60)


# A stand-in for a runner: it runs one "flow run" child that lives until a line arrives on stdin
# (which the child inherits), then waits for a second line itself.
RUNNER = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'input()']); input()"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the children from Linux's /proc")
def test_a_runner_is_idle_only_once_its_flow_run_processes_have_exited() -> None:
    with started(RUNNER) as runner:
        assert wait_until_idle(runner, timeout_s=0.1) is False

        runner.stdin.write("the flow run ends\n")
        runner.stdin.flush()
        assert wait_until_idle(runner, timeout_s=60) is True


# A runner whose flow runs are spawned processes: multiprocessing starts its resource tracker, a
# child that lives as long as the runner does.
SPAWNING_RUNNER = (
    "import multiprocessing as mp; ctx = mp.get_context('spawn'); p = ctx.Process(target=print); p.start(); "
    "p.join(); input()"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the children from Linux's /proc")
def test_a_runners_resource_tracker_is_no_flow_run() -> None:
    with started(SPAWNING_RUNNER) as runner:
        assert wait_until_idle(runner, timeout_s=60) is True
        assert _child_pids(runner.pid)  # the tracker is still there


# A runner whose flow runs fork from a fork server (flexlock_prefect.warm): the fork server is a
# child that lives as long as the runner, the flow runs are its children. The "flow run" lives
# until a line arrives on the runner's stdin; the runner says when it has started it.
FORKING_RUNNER = (
    "import multiprocessing as mp; ctx = mp.get_context('forkserver'); done = ctx.Event(); "
    "p = ctx.Process(target=done.wait); p.start(); print('started', flush=True); input(); done.set(); p.join(); "
    "input()"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the children from Linux's /proc")
def test_a_warm_runner_is_idle_once_the_fork_servers_children_have_exited() -> None:
    runner = subprocess.Popen([sys.executable, "-c", FORKING_RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert runner.stdout.readline() == b"started\n"
        assert wait_until_idle(runner, timeout_s=0.1) is False

        runner.stdin.write(b"the flow run ends\n")
        runner.stdin.flush()
        assert wait_until_idle(runner, timeout_s=60) is True
        assert _child_pids(runner.pid)  # the fork server (and the tracker) are still there
    finally:
        runner.communicate(b"the runner stops\n", timeout=60)
