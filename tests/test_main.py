"""`locked_flow` against a real Prefect server: record on disk, artifacts, events, flow run states."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flexlock_prefect import RunLock, locked_flow, storage
from flexlock_prefect.artifacts import artifact_key
from flexlock_prefect.events import RUN_COMPLETED, RUN_FAILED
from flexlock_prefect.lock import logical_run_key
from tests.helpers.prefect_api import artifacts, flow_run, wait_for_events

pytestmark = pytest.mark.integration


@locked_flow(
    config={"lr": 0.1, "epochs": 2, "input_data": "???", "api_token": "CANARY-tok-5e1f", "save_dir": "???"},
    data=["input_data"],
)
def train(cfg) -> None:
    """A tiny compute that writes outputs into its save_dir."""
    if cfg.lr < 0:
        raise ValueError(f"negative learning rate {cfg.lr} (token {cfg.api_token})")
    out = storage.filesystem(storage.canonical_url(cfg.save_dir))
    fs, path = out
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path}/metrics.json", json.dumps({"acc": 0.9, "lr": cfg.lr}).encode())


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")
    return data


def _train(inputs: Path, save_dir: str, *overrides: str) -> str:
    return train(overrides=[f"input_data={inputs}", f"save_dir={save_dir}", *overrides])


@pytest.mark.prefect
def test_a_locked_flow_is_a_real_prefect_flow_with_the_users_names() -> None:
    assert train.name == "train" and train.fn.__name__ == "train"
    assert set(train.parameters.properties) == {"overrides", "config"}
    assert train.to_deployment(name="t").entrypoint.endswith("tests/test_main.py:train")


def test_a_run_writes_a_complete_run_lock_and_returns_its_save_dir(
    prefect_api: str, inputs: Path, tmp_path: Path
) -> None:
    save_dir = _train(inputs, str(tmp_path / "run"), "lr=0.2")
    assert save_dir == f"file://{tmp_path}/run"
    lock = RunLock.load(save_dir)
    assert lock.config["lr"] == 0.2 and lock.config["api_token"] == "<redacted>"
    assert lock.result.status == "completed" and lock.result.error is None
    assert set(lock.result.outputs) == {"metrics.json"}
    assert lock.result.outputs["metrics.json"].startswith("xxh3-128-tree:")
    assert lock.prefect.flow_name == "train"
    assert lock.prefect.parameters["overrides"][-1] == "lr=0.2"
    assert flow_run(lock.prefect.flow_run_id).state.is_completed()


def test_the_completed_event_carries_the_documented_resource_and_payload(
    prefect_api: str, inputs: Path, tmp_path: Path
) -> None:
    save_dir = _train(inputs, str(tmp_path / "run"))
    lock = RunLock.load(save_dir)
    resource_id = f"flexlock.run.{logical_run_key(save_dir)}"
    [event] = wait_for_events(RUN_COMPLETED, resource_id)
    assert event.resource["flexlock.logical_run_id"] == save_dir
    assert event.resource["flexlock.save_dir"] == save_dir
    assert event.payload == {
        "save_dir": save_dir,
        "fingerprint": lock.fingerprint,
        "lock_digest": lock.digest,
        "status": "completed",
    }
    related = {r.role: r.id for r in event.related}
    assert related["flow-run"] == f"prefect.flow-run.{lock.prefect.flow_run_id}"


def test_artifacts_are_keyed_by_logical_run_and_keep_a_history(prefect_api: str, inputs: Path, tmp_path: Path) -> None:
    save_dir = _train(inputs, str(tmp_path / "run"))
    _train(inputs, str(tmp_path / "run"), "epochs=3")
    markdown = artifacts(artifact_key(save_dir))
    assert len(markdown) == 2 and markdown[0].type == "markdown"
    assert "epochs" in markdown[0].data and "fingerprint" in markdown[0].data and "| 3 |" in markdown[0].data
    assert "CANARY-tok-5e1f" not in markdown[0].data
    [table, _] = artifacts(artifact_key(save_dir, "run-data"))
    rows = json.loads(table.data)
    assert rows[0]["name"] == "input_data" and rows[0]["algorithm"] == "xxh3-128-tree"


def test_a_failing_compute_leaves_a_failed_record_event_and_flow_run(
    prefect_api: str, inputs: Path, tmp_path: Path
) -> None:
    save_dir = storage.canonical_url(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="negative learning rate"):
        _train(inputs, save_dir, "lr=-1")
    lock = RunLock.load(save_dir)
    assert lock.result.status == "failed"
    assert lock.result.error == "ValueError: negative learning rate -1 (token <redacted>)"
    assert flow_run(lock.prefect.flow_run_id).state.is_failed()
    [event] = wait_for_events(RUN_FAILED, f"flexlock.run.{logical_run_key(save_dir)}")
    assert event.payload["status"] == "failed" and event.payload["lock_digest"] == lock.digest


def test_a_bad_override_fails_before_anything_is_recorded(prefect_api: str, inputs: Path, tmp_path: Path) -> None:
    from flexlock_prefect.exceptions import ConfigError

    with pytest.raises(ConfigError, match="nonexistent"):
        _train(inputs, str(tmp_path / "run"), "nonexistent.key=1")
    assert not (tmp_path / "run").exists()


def test_an_s3_save_dir_holds_the_record_and_outputs(prefect_api: str, s3_bucket: str, inputs: Path) -> None:
    save_dir = _train(inputs, f"{s3_bucket}/runs/one")
    lock = RunLock.load(save_dir)
    assert lock.logical_run_id == f"{s3_bucket}/runs/one"
    assert set(lock.result.outputs) == {"metrics.json"}
    wait_for_events(RUN_COMPLETED, f"flexlock.run.{logical_run_key(save_dir)}")


def test_long_data_hashing_reports_progress_as_an_artifact(
    prefect_api: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    monkeypatch.setenv("FLEXLOCK_PROGRESS_MIN_BYTES", "1")
    lock = RunLock.load(_train(inputs, str(tmp_path / "run")))
    with get_client(sync_client=True) as client:
        [progress] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[lock.prefect.flow_run_id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    assert progress.data == 100.0 and "hashing" in progress.description


def test_identical_inputs_are_not_recomputed_but_any_change_is(prefect_api: str, inputs: Path, tmp_path: Path) -> None:
    skip_computed: list[str] = []

    @locked_flow(
        config={"seed": 0, "input_data": "???", "save_dir": "???"}, data=["input_data"], skip_if_identical=True
    )
    def cached_train(cfg) -> None:
        skip_computed.append(cfg.save_dir)

    def run(name: str, *overrides: str) -> str:
        return cached_train(overrides=[f"input_data={inputs}", f"save_dir={tmp_path / 'runs' / name}", *overrides])

    first = run("a")
    assert run("b") == first and not (tmp_path / "runs" / "b").exists()
    assert len(skip_computed) == 1
    assert run("c", "seed=1") != first and len(skip_computed) == 2
    inputs.write_text("x,y\n1,3\n")
    assert run("d") not in (first,) and len(skip_computed) == 3
    assert artifacts(artifact_key(first, "run-skipped"))


IDENTICAL_RUN = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from flexlock_prefect import locked_flow

    inputs, save_dir, computed, started, n = sys.argv[1:]
    CONFIG = {"seed": 0, "input_data": "???", "save_dir": "???"}

    @locked_flow(config=CONFIG, data=["input_data"], skip_if_identical=True)
    def cached_train(cfg) -> None:
        with open(computed, "a") as out:
            out.write(cfg.save_dir + os.linesep)
        time.sleep(5)  # the work: long enough for every other run to reach its check meanwhile

    # Start together: every process has imported everything before any run begins.
    Path(started, save_dir.replace("/", "_")).touch()
    while len(os.listdir(started)) < int(n):
        time.sleep(0.05)
    print(cached_train(overrides=[f"input_data={inputs}", f"save_dir={save_dir}"]))
    """
)


def test_of_ten_identical_runs_started_together_exactly_one_computes(
    prefect_api: str, inputs: Path, tmp_path: Path
) -> None:
    computed, started = tmp_path / "computed.txt", tmp_path / "started"
    started.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", IDENTICAL_RUN, str(inputs), str(tmp_path / "runs" / f"r{i}"), str(computed)]
            + [str(started), "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(10)
    ]
    returned = [proc.communicate(timeout=600)[0].strip().splitlines()[-1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    [the_one] = computed.read_text().splitlines()
    assert set(returned) == {storage.canonical_url(the_one)}  # the others waited, then returned it
