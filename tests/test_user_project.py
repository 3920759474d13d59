"""The product as a new user meets it: installed from its wheel, next to their own code.

A module fixture builds the wheel of this checkout and installs it in a fresh virtualenv outside
the checkout, whose python imports flexlock_prefect from the wheel and never from the checkout.
Each test writes a user's project (`tests/user_project/`) into a new git repository and drives
it only through that virtualenv's python and `flexlock-prefect` command, against the session's
real Prefect server and MLflow server. This proves that:

- two pipelines served side by side from the user's `serve.py` (`serve_pipelines` of two
  `Pipeline`s, warm: flow runs fork from one process) each log their own main runs, and only those, into their own
  MLflow experiment: one triggered diag run per main run, none by the other pipeline's diag, one
  active MLflow run per save_dir; each run.lock records the user's commit;
- a relog requested of one pipeline (`relog --via-event --main train-b`) relogs that pipeline's
  runs and leaves the other pipeline's runs under the same root alone (relog-all relogs only
  the save_dirs recorded by its pipeline's main flow);
- `flexlock-prefect demo` works from the wheel in an empty directory, on an existing Prefect API;
- `flexlock-prefect init` writes a prefect.yaml that `prefect deploy --all` accepts, with the
  pipeline's scoped diag trigger;
- in production's hybrid (README, Running in production), deployed with that prefect.yaml, a
  main run of the deployment runs in a process worker of the pool, from the user's project,
  and its triggered diag runs in the user's `serve_diag.py` (`serve_pipelines(...,
  queue="diag")`), which took the diag queue's deployments over from the pool, and not on the
  worker: one active MLflow run for the save_dir, in the pipeline's experiment, and a run.lock
  that records the user's commit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound

from flexlock_prefect.lock import RunLock, logical_run_key
from flexlock_prefect.storage import canonical_url
from flexlock_prefect.tracking.tags import ACTIVE, LOGICAL_RUN_KEY, STATUS, SUPERSEDES
from tests.helpers.git_repos import commit_all, git, make_repo
from tests.helpers.prefect_api import delete_deployments, deployments_named, poll, wait_for_flow_runs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
USER_PROJECT = Path(__file__).resolve().parent / "user_project"
PIPELINE_A = ("train-a/train-a", "diag-a/train-a", "relog-all/train-a")
PIPELINE_B = ("train-b/train-b", "diag-b/train-b", "relog-all/train-b")
INIT_DEPLOYMENTS = (*PIPELINE_A, "promote/train-a", "registry-audit/train-a")
"""What `flexlock-prefect init --main pipelines.py:train_a --diag pipelines.py:diag_a` deploys."""
DIAG_QUEUE_A = INIT_DEPLOYMENTS[1:]
"""Those of them on the pool's `diag` queue, which the user's `serve_diag.py` serves warm."""
DEMO_DEPLOYMENTS = ("train/train", "diag/train", "relog-all/train", "promote/train", "registry-audit/train")
QUIET_WINDOW_S = 5
"""How long a diag that must not run is given to show up after the other diag completed: its run
would be created by the same event, before that diag even started (trigger latency p95 ~2.5 s)."""


def outside_the_checkout() -> dict[str, str]:
    """This process's environment without PYTHONPATH (which puts the checkout first for the tests)."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}


@dataclass(frozen=True)
class Venv:
    """A virtualenv outside the checkout with the checkout's wheel installed."""

    root: Path
    python: Path
    bin: Path

    def env(self, **settings: str | None) -> dict[str, str]:
        """This process's environment (servers, S3, stat cache), minus what would let the
        checkout in (PYTHONPATH), with the venv first on PATH; a None setting is removed."""
        env = outside_the_checkout()
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env.update(PYTHONUNBUFFERED="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
        for key, value in settings.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


def run(command: list[str | Path], cwd: Path, env: Mapping[str, str], timeout_s: float = 180):
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Venv:
    """The wheel of this checkout, installed with `--no-deps` in a virtualenv that reuses the
    installed dependencies (`--system-site-packages`)."""
    started = time.monotonic()
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout, and a
    # stale build/lib could put modules deleted since into the wheel.
    source = work / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests"),
    )
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source],
        work,
        outside_the_checkout(),
    )
    [wheel] = (work / "dist").glob("flexlock_prefect-*.whl")
    built = time.monotonic()

    root = work / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root], work, outside_the_checkout())
    env = Venv(root, root / "bin" / "python", root / "bin")
    if sys.prefix != sys.base_prefix:
        # This process runs in a virtualenv itself (CI's second run): `--system-site-packages`
        # would see the base interpreter's packages, not the dependencies installed here. Add
        # this environment's site directories the way `--system-site-packages` adds its own.
        probe_site = "import sysconfig; print(sysconfig.get_path('purelib'))"
        [own] = run([env.python, "-c", probe_site], work, outside_the_checkout()).stdout.split()
        lines = [f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages()]
        Path(own, "zz-this-test-environment.pth").write_text("".join(lines))
    # The venv sees the system's pip; --ignore-installed leaves the system's copy of the package
    # (an editable install, for this test process) alone and installs the wheel into the venv.
    run([env.python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], work, env.env())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    probe = "import json, sys, flexlock_prefect; print(json.dumps([flexlock_prefect.__file__, sys.path]))"
    where, path = json.loads(run([env.python, "-c", probe], elsewhere, env.env()).stdout)
    assert Path(where).is_relative_to(root), f"flexlock_prefect imported from {where}, not from the venv"
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(REPO)], path
    assert (env.bin / "flexlock-prefect").exists()
    ready = time.monotonic()

    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when the test passes
            reporter.write_line(
                f"\n[test_user_project] wheel built in {built - started:.1f}s, venv created and wheel "
                f"installed in {ready - built:.1f}s ({ready - started:.1f}s in all)"
            )
    return env


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """The user's project (tests/user_project/) in a new git repository with one commit."""
    files = {
        p.relative_to(USER_PROJECT).as_posix(): p.read_bytes()
        for p in USER_PROJECT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    return make_repo(tmp_path / "my-project", files)


def runs_of_flow(flow_name: str, since: datetime) -> list[FlowRun]:
    """Every flow run of the flow `flow_name` created since `since`, by any deployment or none."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), flow_run_filter=FlowRunFilter()
        )
    return [r for r in runs if r.created is not None and r.created >= since]


def assert_no_new_runs(flow_name: str, since: datetime, expected: int) -> None:
    """Within QUIET_WINDOW_S, no more than `expected` runs of `flow_name` appear."""
    runs, appeared = poll(lambda: runs_of_flow(flow_name, since), lambda runs: len(runs) > expected, QUIET_WINDOW_S)
    assert not appeared, f"{flow_name} ran {len(runs)} times, expected {expected}: {[r.parameters for r in runs]}"
    assert len(runs) == expected


@contextmanager
def user_process(
    command: list[str | Path], project: Path, env: Mapping[str, str], log: Path
) -> Iterator[Callable[[], None]]:
    """`command` started from the user's project in a process group of its own, its output in
    `log`; yields a check that it is still running (it fails with the log's end). At the end the
    group (the command and the flow runs it started) is stopped: SIGTERM, SIGKILL after 30 s."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(c) for c in command],
            cwd=project,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def running() -> None:
            assert process.poll() is None, f"{command} exited {process.returncode}:\n{log.read_text()[-3000:]}"

        try:
            yield running
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@contextmanager
def served_pipelines(
    venv: Venv,
    project: Path,
    env: Mapping[str, str],
    script: str = "serve.py",
    deployments: tuple[str, ...] = (*PIPELINE_A, *PIPELINE_B),
) -> Iterator[Path]:
    """The user's `python <script>`, once it serves its `deployments` (they exist, on no work
    pool: a runner's own, or taken over from a pool); yields its log. At the end it is stopped
    and its deployments and their automations are deleted."""
    log = project.parent / f"{Path(script).stem}.log"
    try:
        with user_process([venv.python, script], project, env, log) as running:

            def served() -> set[str]:
                running()
                return {name for name, d in deployments_named(deployments).items() if d.work_pool_name is None}

            found, done = poll(served, lambda names: set(deployments) <= names, 90)
            assert done, f"not served: {sorted(set(deployments) - found)}\n{log.read_text()[-3000:]}"
            yield log
    finally:
        delete_deployments(deployments)


@contextmanager
def deployed_with_init(venv: Venv, project: Path, env: Mapping[str, str]) -> Iterator[str]:
    """The user's pipeline A deployed as README's "Use it in your project" says: `flexlock-prefect
    init` (committed), a new process work pool with its `diag` queue, `prefect deploy --all`;
    yields the pool. At the end the deployments, their automations and the pool are deleted."""
    pool = f"user-project-{uuid.uuid4().hex[:8]}"
    init = ["init", "--main", "pipelines.py:train_a", "--diag", "pipelines.py:diag_a", "--pool", pool]
    run([venv.bin / "flexlock-prefect", *init], project, env)
    commit_all(project, "prefect.yaml from flexlock-prefect init")
    prefect = [venv.python, "-m", "prefect", "--no-prompt"]
    try:
        run([*prefect, "work-pool", "create", pool, "--type", "process"], project, env)
        run([*prefect, "work-queue", "create", "diag", "--pool", pool, "--priority", "1"], project, env)
        run([*prefect, "deploy", "--all"], project, env, timeout_s=240)
        yield pool
    finally:
        delete_deployments(INIT_DEPLOYMENTS)
        with get_client(sync_client=True) as client, suppress(ObjectNotFound):
            client.delete_work_pool(pool)


@contextmanager
def pool_worker(venv: Venv, project: Path, env: Mapping[str, str], pool: str) -> Iterator[Path]:
    """`prefect worker start --pool <pool> --type process` from the user's project, polling every
    second, once the pool shows it; yields its log. It is stopped at the end."""
    log = project.parent / "worker.log"
    command = [venv.python, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    with user_process(command, project, {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, log) as running:

        def workers() -> list:
            running()
            with get_client(sync_client=True) as client:
                return client.read_workers_for_work_pool(pool)

        _, started = poll(workers, bool, 90)
        assert started, f"no worker on {pool}:\n{log.read_text()[-3000:]}"
        yield log


def run_main(venv: Venv, project: Path, env: Mapping[str, str], main: str, save_dir: Path) -> str:
    """`python run.py <main> save_dir=...` in the user's project; the save_dir it returned."""
    ran = run([venv.python, "run.py", main, f"save_dir={save_dir}"], project, env)
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(result["flexlock_prefect"]).is_relative_to(venv.root), result
    return result["save_dir"]


def active_runs(client: MlflowClient, save_dir: str) -> list:
    """The runs tagged active of this save_dir, in any experiment of the tracking server."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(
        experiments,
        filter_string=f"tags.`{LOGICAL_RUN_KEY}` = '{logical_run_key(save_dir)}' and tags.`{STATUS}` = '{ACTIVE}'",
    )


def experiment_of(client: MlflowClient, run) -> str:
    return client.get_experiment(run.info.experiment_id).name


def test_two_served_pipelines_each_log_their_own_runs_into_their_own_experiment(
    venv: Venv, user_project: Path, prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    started = datetime.now(UTC)
    env = venv.env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=mlflow_server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    head = git(user_project, "rev-parse", "HEAD")
    save_dirs = {}
    with served_pipelines(venv, user_project, env) as log:
        for main, diag, other in (("train_a", "diag-a", "diag-b"), ("train_b", "diag-b", "diag-a")):
            pipeline = main.replace("_", "-")
            save_dir = save_dirs[pipeline] = run_main(venv, user_project, env, main, tmp_path / "runs" / main)

            [diag_run] = wait_for_flow_runs(f"{diag}/{pipeline}", 1, timeout_s=120)
            assert diag_run.state.is_completed(), f"{diag_run.state}\n{log.read_text()[-3000:]}"
            assert diag_run.parameters == {"save_dir": save_dir}
            assert diag_run.created_by is not None and diag_run.created_by.type == "AUTOMATION"
            # The other pipeline's diag saw the same event and must not have fired; this diag
            # must not fire twice either.
            assert_no_new_runs(other, started, expected=0 if other == "diag-b" else 1)
            assert_no_new_runs(diag, started, expected=1)

            lock = RunLock.load(save_dir)
            assert lock.result.status == "completed"
            assert lock.prefect.flow_name == pipeline
            code = lock.repos["code"]
            assert (code.commit, code.dirty, code.branch) == (head, False, "main")

    client = MlflowClient(mlflow_server)
    for pipeline, experiment, metric, score in (
        ("train-a", "proj-a", "score_a", 0.5),
        ("train-b", "proj-b", "score_b", 0.7),
    ):
        [active] = active_runs(client, save_dirs[pipeline])
        assert experiment_of(client, active) == experiment
        assert active.data.metrics[metric] == score
        assert active.data.tags["flexlock.lock_digest"] == RunLock.load(save_dirs[pipeline]).digest


def test_a_relog_request_to_one_pipeline_leaves_the_other_pipelines_runs_alone(
    venv: Venv, user_project: Path, prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    """Both pipelines keep their runs under one root, as `runs/${now:...}` in the README's (and
    this project's) config has them. `relog --via-event --main train-b` asks pipeline B's
    relog-all to relog its runs with diag B: pipeline A's runs under the same root must keep
    their active run in proj-a, as the scoped triggers promise for the diag deployments (the
    pipeline's relog-all relogs only the save_dirs its main flow recorded)."""
    root = tmp_path / "runs"
    env = venv.env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=mlflow_server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    client = MlflowClient(mlflow_server)
    with served_pipelines(venv, user_project, env) as log:
        save_a = run_main(venv, user_project, env, "train_a", root / "a")
        save_b = run_main(venv, user_project, env, "train_b", root / "b")
        for deployment in ("diag-a/train-a", "diag-b/train-b"):
            [diag_run] = wait_for_flow_runs(deployment, 1, timeout_s=120)
            assert diag_run.state.is_completed(), f"{diag_run.state}\n{log.read_text()[-3000:]}"
        [logged_a], [logged_b] = active_runs(client, save_a), active_runs(client, save_b)

        cli = venv.bin / "flexlock-prefect"
        run([cli, "relog", "--root", root, "--via-event", "--main", "train-b", "--force"], user_project, env)
        [relog_run] = wait_for_flow_runs("relog-all/train-b", 1, timeout_s=120)
        assert relog_run.state.is_completed(), f"{relog_run.state}\n{log.read_text()[-3000:]}"

    [relogged_b] = active_runs(client, save_b)
    assert relogged_b.data.tags[SUPERSEDES] == logged_b.info.run_id
    assert experiment_of(client, relogged_b) == "proj-b"
    [active_a] = active_runs(client, save_a)
    assert (active_a.info.run_id, experiment_of(client, active_a)) == (logged_a.info.run_id, "proj-a"), (
        f"pipeline B's relog-all relogged pipeline A's {save_a} with diag B into {experiment_of(client, active_a)}"
    )


def test_the_demo_runs_from_the_wheel_in_an_empty_directory_on_an_existing_prefect_api(
    venv: Venv, prefect_api: str, tmp_path: Path
) -> None:
    cwd, root = tmp_path / "cwd", tmp_path / "demo"
    cwd.mkdir()
    env = venv.env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=None)
    try:
        ran = run([venv.bin / "flexlock-prefect", "demo", "--root", root], cwd, env, timeout_s=240)
    finally:
        delete_deployments(DEMO_DEPLOYMENTS)
    assert f"Prefect API at {prefect_api}" in ran.stderr, ran.stderr  # reused, none started
    [run_id] = [line.split()[-1] for line in ran.stdout.splitlines() if line.startswith("MLflow run:")]
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("flexlock-demo")
    [active] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STATUS}` = '{ACTIVE}'")
    assert active.info.run_id == run_id
    assert list(cwd.iterdir()) == [], "the demo writes only under its --root"


def test_init_writes_a_prefect_yaml_that_prefect_deploy_accepts_with_the_scoped_trigger(
    venv: Venv, user_project: Path, prefect_api: str
) -> None:
    with deployed_with_init(venv, user_project, venv.env(PREFECT_API_URL=prefect_api)) as pool:
        assert set(deployments_named(INIT_DEPLOYMENTS)) == set(INIT_DEPLOYMENTS)
        with get_client(sync_client=True) as client:
            diag = client.read_deployment_by_name("diag-a/train-a")
            assert diag.entrypoint == "pipelines.py:diag_a"
            assert (diag.work_pool_name, diag.work_queue_name) == (pool, "diag")
            [automation] = client.read_resource_related_automations(f"prefect.deployment.{diag.id}")
            assert automation.trigger.expect == {"flexlock.run.completed"}
            assert automation.trigger.match.model_dump()["flexlock.flow"] == "train-a"
            [action] = automation.actions
            assert action.parameters == {"save_dir": "{{ event.payload.save_dir }}"}
            # prefect deploy --no-prompt points workers at the project for the user's code
            assert diag.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(user_project.resolve())}}
            ]
            relog_all = client.read_deployment_by_name("relog-all/train-a")
            assert relog_all.parameters["diag"] == "pipelines.py:diag_a"


def test_deployed_main_runs_on_the_pools_worker_and_its_diag_in_the_users_warm_diag_runner(
    venv: Venv, user_project: Path, prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    """Production's hybrid from the user's repo: `init` and `prefect deploy --all`, a process
    worker on the pool, and the user's `serve_diag.py` serving the diag queue warm beside it (it
    takes those deployments over from the pool). A main run of the deployment runs on the
    worker, and the diag its completion triggers runs in the warm runner, not on the worker."""
    env = venv.env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=mlflow_server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    path = tmp_path / "runs" / "hybrid"
    save_dir = canonical_url(path)  # the save_dir the main flow returns and its event carries
    with (
        deployed_with_init(venv, user_project, env) as pool,
        pool_worker(venv, user_project, env, pool) as worker_log,
        served_pipelines(venv, user_project, env, "serve_diag.py", DIAG_QUEUE_A) as runner_log,
    ):
        head = git(user_project, "rev-parse", "HEAD")
        parameters = json.dumps({"overrides": [f"save_dir={path}"]})
        run(
            [venv.python, "-m", "prefect", "deployment", "run", "train-a/train-a", "--params", parameters],
            user_project,
            env,
        )

        [main_run] = wait_for_flow_runs("train-a/train-a", 1, timeout_s=180)
        assert main_run.state.is_completed(), f"{main_run.state}\n{worker_log.read_text()[-3000:]}"
        assert main_run.work_pool_name == pool
        [diag_run] = wait_for_flow_runs("diag-a/train-a", 1, timeout_s=120)
        assert diag_run.state.is_completed(), f"{diag_run.state}\n{runner_log.read_text()[-3000:]}"
        assert diag_run.parameters == {"save_dir": save_dir}
        assert diag_run.created_by is not None and diag_run.created_by.type == "AUTOMATION"
        deployments = deployments_named(("train-a/train-a", "diag-a/train-a"))
        assert deployments["train-a/train-a"].work_pool_name == pool  # the main flow stays on the pool
        assert (deployments["diag-a/train-a"].work_pool_name, diag_run.work_pool_name) == (None, None)
        # Each flow run's engine logs to the output of the process it runs in.
        worker_saw, runner_saw = worker_log.read_text(), runner_log.read_text()
        assert f"Beginning flow run '{main_run.name}' for flow 'train-a'" in worker_saw
        assert f"Beginning flow run '{diag_run.name}' for flow 'diag-a'" in runner_saw
        assert "for flow 'diag-a'" not in worker_saw and "for flow 'train-a'" not in runner_saw

    lock = RunLock.load(save_dir)
    assert lock.result.status == "completed"
    assert (lock.prefect.flow_run_id, lock.prefect.flow_name) == (str(main_run.id), "train-a")
    code = lock.repos["code"]
    assert (code.path, code.commit, code.dirty, code.branch) == (user_project.as_posix(), head, False, "main")
    client = MlflowClient(mlflow_server)
    [active] = active_runs(client, save_dir)
    assert experiment_of(client, active) == "proj-a"
    assert active.data.metrics["score_a"] == 0.5
    assert active.data.tags["flexlock.lock_digest"] == lock.digest
