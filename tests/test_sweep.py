"""`sweep` against a real Prefect server, over the bundled example flow: trials, reuse, failures,
artifacts, the event, the CLI, and trials run by a served deployment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from flexlock_prefect import RunLock, storage
from flexlock_prefect.artifacts import artifact_key
from flexlock_prefect.events import SWEEP_COMPLETED
from flexlock_prefect.examples import train as example
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.local import wait_until_idle
from flexlock_prefect.sweep import sweep
from flexlock_prefect.sweeplock import SweepLock
from tests.helpers.prefect_api import artifacts, flow_run, poll, wait_for_events
from tests.helpers.runs import cli

TRAIN = "flexlock_prefect.examples.train.train"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return example.prepare_example_data(tmp_path / "data.csv")


def run_sweep(data: Path, root: Path, **options: object) -> SweepLock:
    return sweep(example.train, root=str(root), overrides=[f"input_data={data}"], **options)


def digests(lock: SweepLock) -> dict[str, str]:
    """Each trial's run.lock digest, by save_dir: unchanged unless the trial ran again."""
    return {t.save_dir: RunLock.load(t.save_dir).digest for t in lock.trials}


@pytest.mark.integration
def test_a_2x2_grid_leaves_four_completed_trials_a_sweep_lock_artifacts_and_an_event(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sweep"
    lock = run_sweep(data, root, grid={"model.C": [0.1, 1.0], "seed": [0, 1]}, metric="roc_auc")

    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["sweep.lock", *(Path(t.save_dir).name for t in lock.trials)]
    )
    assert [t.values for t in lock.trials] == [
        {"model.C": 0.1, "seed": 0},
        {"model.C": 0.1, "seed": 1},
        {"model.C": 1.0, "seed": 0},
        {"model.C": 1.0, "seed": 1},
    ]
    for trial in lock.trials:
        run = RunLock.load(trial.save_dir)
        assert run.result.status == "completed" and trial.status == "completed" and not trial.reused
        assert run.fingerprint == trial.trial_key_hash == trial.fingerprint
        assert (run.config["model"]["C"], run.config["seed"]) == (trial.values["model.C"], trial.values["seed"])
        assert flow_run(run.prefect.flow_run_id).parent_task_run_id is not None  # a subflow of the sweep
        assert trial.metric_value == json.loads(Path(run.save_dir[7:], "metrics.json").read_text())["roc_auc"]
    assert SweepLock.load(str(root)) == lock
    best = max(lock.trials, key=lambda t: t.metric_value)
    assert (lock.best.save_dir, lock.best.metric, lock.best.value) == (best.save_dir, "roc_auc", best.metric_value)

    url = storage.canonical_url(root)
    [latest, *earlier] = artifacts(artifact_key(url, "sweep-trials"))
    assert len(earlier) == 4  # one version when the sweep started, then one per finished trial
    rows = json.loads(latest.data)
    assert [row["status"] for row in rows] == ["completed"] * 4 and sum("(best)" in r["trial"] for r in rows) == 1
    [progress] = artifacts(artifact_key(url, "sweep-progress"))
    assert progress.data == 100.0
    [event] = wait_for_events(SWEEP_COMPLETED, f"flexlock.sweep.{lock.study_key_hash}")
    assert event.payload == {
        "root": url,
        "study_key_hash": lock.study_key_hash,
        "best": lock.best.model_dump(mode="json"),
        "trials": {"total": 4, "completed": 4, "failed": 0, "pending": 0},
    }
    assert event.resource["flexlock.flow"] == "train"


@pytest.mark.integration
def test_running_a_sweep_again_computes_nothing_and_a_new_value_runs_only_its_trial(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sweep"
    first = run_sweep(data, root, grid={"model.C": [0.1, 1.0]})
    before = digests(first)

    again = run_sweep(data, root, grid={"model.C": [1.0, 0.1]})
    assert again.study_key_hash == first.study_key_hash
    assert {t.trial_key_hash: t.save_dir for t in again.trials} == {t.trial_key_hash: t.save_dir for t in first.trials}
    assert all(t.reused and t.status == "completed" for t in again.trials) and digests(again) == before

    grown = run_sweep(data, root, grid={"model.C": [0.1, 1.0, 10.0]})
    assert grown.study_key_hash != first.study_key_hash
    [new] = [t for t in grown.trials if not t.reused]
    assert new.values == {"model.C": 10.0} and new.status == "completed"
    assert {t.trial_key_hash: t.save_dir for t in grown.trials if t.reused} == {
        t.trial_key_hash: t.save_dir for t in first.trials
    }
    assert {k: v for k, v in digests(grown).items() if k != new.save_dir} == before


@pytest.mark.integration
def test_a_trial_whose_compute_raises_is_recorded_failed_and_the_others_complete(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sweep"
    state = sweep(
        example.train,
        root=str(root),
        overrides=[f"input_data={data}"],
        grid={"model.C": [-1.0, 1.0, 2.0]},
        return_state=True,
    )
    assert state.is_completed(), state
    failed, *completed = state.result().trials
    assert failed.status == "failed" and "InvalidParameterError" in failed.error and "'C' parameter" in failed.error
    assert RunLock.load(failed.save_dir).result.status == "failed"
    assert [t.status for t in completed] == ["completed", "completed"]
    assert flow_run(failed.flow_run_id).state.is_failed()

    again = run_sweep(data, root, grid={"model.C": [-1.0, 1.0, 2.0]})  # only the failed one runs again
    assert [(t.status, t.reused) for t in again.trials] == [("failed", False), ("completed", True), ("completed", True)]


@pytest.mark.integration
def test_a_sweep_fails_when_every_trial_failed_or_at_the_first_failure_with_fail_fast(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    options = {"overrides": [f"input_data={data}"], "return_state": True}
    state = sweep(example.train, root=str(tmp_path / "all"), grid={"model.C": [-1.0, -2.0]}, **options)
    assert state.is_failed() and "2 of 2 trials failed" in state.message
    assert [t.status for t in SweepLock.load(str(tmp_path / "all")).trials] == ["failed", "failed"]

    root = tmp_path / "fast"
    state = sweep(
        example.train, root=str(root), grid={"model.C": [-1.0, 1.0]}, max_parallel=1, fail_fast=True, **options
    )
    assert state.is_failed() and "1 of 2 trials failed (fail_fast)" in state.message
    assert [t.status for t in SweepLock.load(str(root)).trials] == ["failed", "pending"]


@pytest.mark.integration
def test_the_cli_sweeps_random_draws_and_prints_the_trials_and_the_best(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sweep"
    args = ["sweep", TRAIN, "--random", "2", "--space", "model.C=loguniform:0.01:10", "--seed", "3"]
    result = cli(*args, "--root", str(root), "--override", f"input_data={data}", "--metric", "accuracy")
    assert result.returncode == 0, result.stderr[-3000:]
    lock = SweepLock.load(str(root))
    assert lock.space == {"distributions": {"model.C": ["loguniform", 0.01, 10]}, "n": 2, "seed": 3}
    assert lock.count("completed") == 2 and f"study {lock.study_key_hash}" in result.stdout
    assert f"best: {lock.best.save_dir} (accuracy = " in result.stdout and "2 trials: 2 completed" in result.stdout


@pytest.mark.integration
def test_the_cli_exits_1_when_trials_failed_and_shows_why(prefect_api: str, data: Path, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    result = cli("sweep", TRAIN, "--grid", "model.C=-1", "--root", str(root), "--override", f"input_data={data}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"error: 1 of 1 trials failed; each one's error is in file://{root}/sweep.lock\n" in result.stderr
    assert "1 trials: 1 failed" in result.stdout and "InvalidParameterError" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--root", "r"], "give either --grid KEY=V1,V2 … or --random N or --optuna N with --space"),
        (["--random", "2", "--root", "r"], "give either --grid KEY=V1,V2 … or --random N or --optuna N with --space"),
        (["--grid", "model.C=1", "--mode", "best", "--root", "r"], "--mode is 'best': give max or min"),
        (["--grid", "model.C=1", "--study-name", "s", "--root", "r"], "--study-name go with --optuna N"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    """More in the hostile-input table (`tests/test_hostile_input.py`); here, also: nothing is written."""
    result = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "sweep", TRAIN, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, no Prefect run started


@contextmanager
def serving(code: str, deployment: str, log: Path) -> Iterator[str]:
    """`code` (which serves `deployment`, `flow/name`) run in a subprocess polling every second;
    the deployment is deleted afterwards."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        )
    try:
        _, served = poll(lambda: _deployment_id(deployment), bool, timeout_s=90)
        assert served, f"{deployment} not served:\n{log.read_text()[-3000:]}"
        yield deployment
    finally:
        wait_until_idle(process, timeout_s=60)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        if deployment_id := _deployment_id(deployment):
            with get_client(sync_client=True) as client:
                client.delete_deployment(deployment_id)


@pytest.fixture
def served_train(prefect_api: str, tmp_path: Path) -> Iterator[str]:
    """The example flow served as the deployment `train/sweep-trials`."""
    code = "from flexlock_prefect.examples.train import train; train.serve(name='sweep-trials')"
    with serving(code, "train/sweep-trials", tmp_path / "serve-train.log") as deployment:
        yield deployment


def _deployment_id(name: str) -> str | None:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_deployment_by_name(name).id)
        except ObjectNotFound:
            return None


@pytest.mark.integration
def test_a_sweep_through_a_served_deployment_runs_its_trials_as_that_deployments_flow_runs(
    served_train: str, data: Path, tmp_path: Path
) -> None:
    lock = run_sweep(data, tmp_path / "sweep", grid={"model.C": [0.5, 2.0]}, deployment=served_train)
    assert [t.status for t in lock.trials] == ["completed", "completed"]
    for trial in lock.trials:
        run = RunLock.load(trial.save_dir)
        assert run.fingerprint == trial.trial_key_hash and run.prefect.deployment_name == "sweep-trials"
        assert flow_run(trial.flow_run_id).parent_task_run_id is not None  # linked to the sweep's flow run


@pytest.mark.integration
def test_a_deployment_of_the_sweep_takes_the_flow_to_sweep_as_its_entrypoint(
    prefect_api: str, data: Path, tmp_path: Path
) -> None:
    code = "from flexlock_prefect.sweep import sweep; sweep.serve(name='nightly')"
    root = tmp_path / "sweep"
    parameters = {
        "flow": TRAIN,
        "grid": {"model.C": [0.5, 2.0]},
        "root": str(root),
        "overrides": [f"input_data={data}"],
    }
    with serving(code, "sweep/nightly", tmp_path / "serve-sweep.log") as deployment:
        run = run_deployment(deployment, parameters=parameters, timeout=300, poll_interval=1)
    assert run.state.is_completed(), run.state
    assert run.name == "sweep-train-sweep"
    assert [t.status for t in SweepLock.load(str(root)).trials] == ["completed", "completed"]


@pytest.mark.integration
def test_an_unknown_deployment_is_one_clear_error(prefect_api: str, data: Path, tmp_path: Path) -> None:
    with pytest.raises(FlexlockError, match="no deployment 'train/nope' on this Prefect server"):
        run_sweep(data, tmp_path / "sweep", grid={"model.C": [1.0]}, deployment="train/nope")
    assert not (tmp_path / "sweep").exists()
