"""Warm flow runs (`flexlock_prefect.warm`): a served flow run forks from a fork server that
imported its code once, instead of starting a new interpreter.

The integration test serves a flow with Prefect's own `Runner` inside `warm_flow_runs`, from a
script in a temporary directory, against the session's Prefect server, with a module of the
user's and the example flows' warm-up preloaded, and runs its deployment twice. Each run writes
down, from inside its own process, who its parent is and who imported the user's module. The
script runs without the variables by which MLflow recognises a test or CI run, so MLflow's usage
telemetry is as a user has it (on), and the fork server must still run no thread.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flexlock_prefect.warm import ENGINE_MODULE, _ForkServerForSpawn, flow_modules
from tests.helpers.prefect_api import poll

SCRIPT = """
import asyncio, json, os, sys
from pathlib import Path

from prefect import flow
from prefect.runner import Runner

from flexlock_prefect.warm import warm_flow_runs


@flow
def where(out: str) -> None:
    import counted

    parent = os.getppid()
    tasks = Path(f"/proc/{parent}/task")
    Path(out).write_text(json.dumps({
        "pid": os.getpid(),
        "parent": parent,
        "parent_command": Path(f"/proc/{parent}/cmdline").read_bytes().decode(errors="replace"),
        "parent_threads": sorted((t / "comm").read_text().strip() for t in tasks.iterdir() if t.name != str(parent)),
        "imported_by": counted.IMPORTED_BY,
        "environment": {k: os.environ.get(k) for k in ("SET_AFTER_THE_FORK_SERVER", "MLFLOW_DISABLE_TELEMETRY")},
    }))


if __name__ == "__main__":
    runner = Runner(name="warm-test")
    runner.add_flow(where, name="warm-test")
    with warm_flow_runs(["counted", "flexlock_prefect.examples.warmup"]):
        os.environ["SET_AFTER_THE_FORK_SERVER"] = "yes"
        asyncio.run(runner.start())
"""

# Native threads that survive a fork by design: jemalloc (linked by pyarrow, which MLflow
# imports) registers fork handlers that take and release every one of its locks.
FORK_SAFE_THREADS = {"jemalloc_bg_thd"}

# The environment variables by which MLflow turns its telemetry off in tests and CI.
TEST_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def test_the_spawn_context_is_the_fork_servers_and_the_rest_is_multiprocessing() -> None:
    forkserver = multiprocessing.get_context("forkserver")
    stand_in = _ForkServerForSpawn(multiprocessing, forkserver)

    assert stand_in.get_context("spawn").get_start_method() == "forkserver"
    assert stand_in.get_context("fork") is multiprocessing.get_context("fork")
    assert stand_in.cpu_count is multiprocessing.cpu_count


@flow
def a_flow_of_this_module() -> None:
    pass


def test_the_modules_to_preload_are_the_importable_ones_of_the_flows() -> None:
    in_main = flow(lambda: None, name="in-main")
    in_main.fn.__module__ = "__main__"
    never_imported = flow(lambda: None, name="never-imported")
    never_imported.fn.__module__ = "no_such_module_of_the_user"

    assert flow_modules([a_flow_of_this_module, in_main, never_imported, a_flow_of_this_module]) == [__name__]


def run_script(directory: Path, code: str) -> subprocess.CompletedProcess[str]:
    (directory / "serve.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    return subprocess.run(
        [sys.executable, "serve.py"], cwd=directory, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_script_that_serves_warm_when_imported_is_told_to_guard_it(tmp_path: Path) -> None:
    """Each warm process imports the script that serves, as multiprocessing's children do: one
    that serves at import would serve again in every run, so serving stops at once, saying so."""
    ran = run_script(tmp_path, "from flexlock_prefect.warm import warm_flow_runs\n\nwith warm_flow_runs():\n    pass\n")

    assert ran.returncode != 0
    assert 'under `if __name__ == "__main__":`' in ran.stderr.strip().splitlines()[-1]


def test_a_module_to_preload_that_does_not_exist_is_named(tmp_path: Path) -> None:
    code = (
        "from flexlock_prefect.warm import warm_flow_runs\n\n"
        "if __name__ == '__main__':\n    with warm_flow_runs(['no_such_module_of_ours']):\n        pass\n"
    )
    ran = run_script(tmp_path, code)

    assert ran.returncode != 0
    assert "cannot preload ['no_such_module_of_ours']" in ran.stderr.strip().splitlines()[-1]


@pytest.fixture
def warm_runner(tmp_path: Path, prefect_api: str) -> Iterator[Path]:
    """The script above serving `where/warm-test` from `tmp_path`, until the test ends."""
    (tmp_path / "serve.py").write_text(SCRIPT)
    (tmp_path / "counted.py").write_text("import os\n\nIMPORTED_BY = os.getpid()\n")
    env = {name: value for name, value in os.environ.items() if name not in TEST_MARKERS}
    env |= {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path.cwd())]), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "serve.py"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def deployed(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def run_where(out: Path, log: Path) -> dict:
    _, served = poll(lambda: deployed("where/warm-test"), bool, 60)
    assert served, log.read_text()[-3000:]
    flow_run = run_deployment("where/warm-test", parameters={"out": str(out)}, timeout=120)
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{log.read_text()[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from Linux's /proc")
def test_served_flow_runs_fork_from_one_process_that_imported_their_code_once(
    warm_runner: Path, tmp_path: Path
) -> None:
    first = run_where(tmp_path / "first.json", warm_runner)
    second = run_where(tmp_path / "second.json", warm_runner)

    fork_server = first["parent"]
    assert second["parent"] == fork_server
    assert "multiprocessing.forkserver" in first["parent_command"]
    assert ENGINE_MODULE in first["parent_command"] and "counted" in first["parent_command"]
    assert first["imported_by"] == second["imported_by"] == fork_server  # imported once, before any run
    assert len({first["pid"], second["pid"], fork_server}) == 3  # each run a process of its own
    # the runner's environment of the moment, as a spawned run has it, not the fork server's
    assert first["environment"] == {"SET_AFTER_THE_FORK_SERVER": "yes", "MLFLOW_DISABLE_TELEMETRY": None}
    # nothing a fork could copy mid-lock: no thread but jemalloc's, whose fork handlers take its locks
    assert set(first["parent_threads"]) | set(second["parent_threads"]) <= FORK_SAFE_THREADS
