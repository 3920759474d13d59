"""Logical-run supersession against a real MLflow server (SQLite, artifacts on moto S3).

Invariants under test (DESIGN.md §5): after any completed relog exactly one run of a logical id
is active; a failed or killed relog never demotes the active run; links form one chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

from flexlock_prefect import mlflowlink, reconcile, relog
from flexlock_prefect.capture import capture_run
from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, DEPRECATED, STATUS, SUPERSEDED_BY, SUPERSEDES
from tests.helpers.runs import cli, make_save_dir

pytestmark = [pytest.mark.integration, pytest.mark.one_prefect]


def chain(save_dir: str) -> list:
    """Runs of the logical id, oldest end first; running runs last."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(reversed(runs_of(client, experiments, logical_run_key(save_dir))))


def assert_one_chain(save_dir: str, finished: int) -> None:
    runs = [r for r in chain(save_dir) if r.info.status == "FINISHED"]
    assert len(runs) == finished
    statuses = [r.data.tags.get(STATUS) for r in runs]
    assert statuses == [DEPRECATED] * (finished - 1) + [ACTIVE]
    for older, newer in zip(runs, runs[1:], strict=False):
        assert older.data.tags[SUPERSEDED_BY] == newer.info.run_id
        assert newer.data.tags[SUPERSEDES] == older.info.run_id
    assert SUPERSEDES not in runs[0].data.tags and SUPERSEDED_BY not in runs[-1].data.tags


def test_first_log_records_the_run_with_contract_tags_params_inputs_and_artifact(
    mlflow_server: str, tmp_path: Path
) -> None:
    save_dir = make_save_dir(tmp_path, "run-a", model_name="clf", env="dev")
    [outcome] = relog([save_dir])
    assert outcome.outcome == "relogged" and outcome.superseded_run_ids == []
    run = MlflowClient().get_run(outcome.run_id)
    tags = run.data.tags
    assert tags[STATUS] == ACTIVE and tags["flexlock.logical_run_id"] == save_dir
    assert tags["flexlock.logical_run_key"] == logical_run_key(save_dir)
    assert {"flexlock.fingerprint", "flexlock.lock_digest", "mlflow.note.content", "mlflow.source.name"} <= set(tags)
    assert (tags["model_name"], tags["env"], tags["project"], tags["mlflow.runName"]) == (
        "clf",
        "dev",
        "supersede-tests",
        "run-a · clf",
    )
    assert run.data.params["lr"] == "0.1" and run.data.params["save_dir"].endswith("run-a")
    assert run.data.metrics == {"acc": 0.9, "loss.train": 0.2}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["input_data"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(outcome.run_id)}
    assert {"run.lock", "run.lock.yaml", "metrics.json", "plot.png"} <= artifacts  # .yaml: MLflow's UI previews it
    assert run.info.status == "FINISHED"


def test_three_relogs_leave_one_active_run_and_one_chain(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = make_save_dir(tmp_path, "run-b")
    first = relog([save_dir])[0]
    MlflowClient().set_tag(first.run_id, "pipeline_run", "p-7")  # a user tag, inherited by relogs
    outcomes = [relog([save_dir], force=True)[0] for _ in range(3)]
    assert [o.superseded_run_ids for o in outcomes] == [[first.run_id], [outcomes[0].run_id], [outcomes[1].run_id]]
    assert_one_chain(save_dir, finished=4)
    assert MlflowClient().get_run(outcomes[-1].run_id).data.tags["pipeline_run"] == "p-7"
    notes = [MlflowClient().get_run(o.run_id).data.tags["mlflow.note.content"] for o in outcomes[-2:]]
    assert notes[0].startswith(f"**deprecated**: superseded by run `{outcomes[-1].run_id}`\n\n**flexlock run**")
    assert notes[1].startswith("**active**: the current run of this save_dir\n\n**flexlock run**")


def test_an_unchanged_save_dir_is_skipped_unless_forced(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = make_save_dir(tmp_path, "run-c")
    first = relog([save_dir])[0]
    again = relog([save_dir])[0]
    assert (again.outcome, again.run_id) == ("skipped", first.run_id)
    assert relog([save_dir], force=True)[0].outcome == "relogged"


def test_a_relog_whose_body_raises_leaves_the_previous_run_active(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = make_save_dir(tmp_path, "run-d")
    good = relog([save_dir])[0]
    with pytest.raises(RuntimeError, match="plotting failed"), mlflowlink(save_dir) as run:
        failed_run_id = run.info.run_id
        mlflow.log_metric("partial", 1.0)
        raise RuntimeError("plotting failed")
    failed = MlflowClient().get_run(failed_run_id)
    assert failed.info.status == "FAILED" and STATUS not in failed.data.tags and SUPERSEDES not in failed.data.tags
    assert MlflowClient().get_run(good.run_id).data.tags[STATUS] == ACTIVE
    assert_one_chain(save_dir, finished=1)
    assert mlflow.active_run() is None


KILLED_RELOG = textwrap.dedent(
    """
    import sys, time
    from flexlock_prefect import mlflowlink
    with mlflowlink(sys.argv[1]) as run:
        print(run.info.run_id, flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def no_prefect_api(monkeypatch: pytest.MonkeyPatch):
    """No shared Prefect API: relogs take no lock, and reconcile relies on `stale_after_s`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def test_a_relog_killed_mid_way_then_reconcile_leaves_exactly_one_active(
    mlflow_server: str, tmp_path: Path, no_prefect_api: None
) -> None:
    """Unserialised on purpose (`no_prefect_api`): the killed relog takes no Prefect lock, and
    reconcile ends its RUNNING run because `stale_after_s=0` makes every running run stale. With a
    Prefect API reconcile would first free the killed holder's lock (tests/test_prefect_lock.py),
    then end the run at once under the lock."""
    save_dir = make_save_dir(tmp_path, "run-e")
    good = relog([save_dir])[0]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RELOG, save_dir], stdout=subprocess.PIPE, text=True)
    killed_run_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert MlflowClient().get_run(killed_run_id).info.status == "RUNNING"
    assert MlflowClient().get_run(good.run_id).data.tags[STATUS] == ACTIVE

    [outcome] = reconcile([save_dir], stale_after_s=0)
    assert (outcome.save_dir, outcome.outcome) == (save_dir, "repaired")
    assert [(r.run_id, r.change) for r in outcome.repairs] == [(killed_run_id, "ended FAILED: its relog died")]
    assert MlflowClient().get_run(killed_run_id).info.status == "FAILED"
    assert_one_chain(save_dir, finished=1)
    assert [o.outcome for o in reconcile([save_dir], stale_after_s=0)] == ["sound"]  # idempotent


def test_reconcile_repairs_two_active_runs_and_ends_a_finished_run_never_promoted_failed(
    mlflow_server: str, tmp_path: Path
) -> None:
    save_dir = make_save_dir(tmp_path, "run-f")
    a = relog([save_dir])[0].run_id
    b = relog([save_dir], force=True)[0].run_id
    c = relog([save_dir], force=True)[0].run_id
    client = MlflowClient()
    client.set_tag(a, STATUS, ACTIVE)  # a crash between "new active" and "old deprecated"
    client.delete_tag(c, STATUS)  # a crash after FINISHED, before tagging
    client.delete_tag(c, SUPERSEDES)
    [outcome] = reconcile([save_dir], stale_after_s=0)
    assert {r.run_id for r in outcome.repairs} == {a, b, c}
    assert client.get_run(c).info.status == "FAILED"  # invariant 2: its relog never committed
    assert_one_chain(save_dir, finished=2)
    assert client.get_run(b).data.tags[STATUS] == ACTIVE
    assert [o.outcome for o in reconcile([save_dir], stale_after_s=0)] == ["sound"]


CONCURRENT_RELOG = textwrap.dedent(
    """
    import sys
    from flexlock_prefect import relog
    [outcome] = relog([sys.argv[1]], force=True)
    print(outcome.run_id)
    """
)


def test_eight_concurrent_relogs_from_separate_processes_leave_one_chain(
    mlflow_server: str, prefect_api: str, tmp_path: Path
) -> None:
    """Serialised (`prefect_api`): the eight processes inherit `PREFECT_API_URL` and relog one
    at a time under the logical run's Prefect lock, so each supersedes the one before it."""
    save_dir = make_save_dir(tmp_path, "run-g")
    first = relog([save_dir])[0]
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_RELOG, save_dir], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    run_ids = [proc.communicate(timeout=300)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(set(run_ids)) == 8
    assert_one_chain(save_dir, finished=9)
    assert {r.info.run_id for r in chain(save_dir)} == {first.run_id, *run_ids}  # no run lost


@pytest.mark.parametrize("name", ["with space", 'quote\'s "both"', "ünïcödé-路径"])
def test_save_dirs_with_spaces_quotes_and_unicode_relog_and_chain(
    mlflow_server: str, tmp_path: Path, name: str
) -> None:
    save_dir = make_save_dir(tmp_path, name)
    relog([save_dir])
    relog([save_dir], force=True)
    assert_one_chain(save_dir, finished=2)
    assert chain(save_dir)[-1].data.tags["flexlock.logical_run_id"] == save_dir


def test_relog_root_relogs_every_save_dir_below_it(mlflow_server: str, tmp_path: Path) -> None:
    save_dirs = [make_save_dir(tmp_path / "runs", f"r{i}") for i in range(3)]
    outcomes = relog(root=str(tmp_path / "runs"))
    assert sorted(o.save_dir for o in outcomes) == sorted(save_dirs)
    assert {o.outcome for o in relog(root=str(tmp_path / "runs"))} == {"skipped"}


def test_a_long_config_value_is_logged_as_its_digest_never_truncated(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = make_save_dir(tmp_path, "run-h", notes="n" * 7000)
    run = MlflowClient().get_run(relog([save_dir])[0].run_id)
    assert run.data.params["notes"].startswith("sha256:")
    assert "run.lock" in run.data.tags["flexlock.long_param.notes"]


def test_mlflow_disabled_in_config_makes_relog_a_no_op(mlflow_server: str, tmp_path: Path) -> None:
    save_dir = make_save_dir(tmp_path, "run-i", mlflow={"enabled": False})
    assert relog([save_dir])[0].outcome == "disabled"
    assert chain(save_dir) == []


def test_an_unreachable_tracking_server_is_one_clear_error_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.servers import free_port

    save_dir = make_save_dir(tmp_path, "run-j")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:CANARY-pw@127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:\d+ is unreachable after 3 attempts") as error:
        relog([save_dir])
    assert "CANARY" not in str(error.value) and time.monotonic() - started < 30


def test_a_tracking_server_lost_mid_relog_fails_that_relog_within_flexlocks_retry_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow retries a request to a lost server for about 4 minutes by default; inside a relog
    its retries are `FLEXLOCK_TRACKING_RETRIES` (1 here), and the relog's outcome says failed."""
    from tests.helpers.servers import start_mlflow_server

    server, uri = start_mlflow_server(tmp_path / "mlflow", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("FLEXLOCK_TRACKING_RETRIES", "1")
    seen: dict[str, str | None] = {}

    def body_losing_its_server(save_dir: str, run: mlflow.ActiveRun) -> None:
        seen["retries"] = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        server.stop()
        mlflow.log_metric("acc", 0.9)

    try:
        [outcome] = relog([make_save_dir(tmp_path, "run-lost")], diag=body_losing_its_server)
    finally:
        server.stop()
    assert seen == {"retries": "1"}
    assert outcome.outcome == "failed" and "Max retries exceeded" in (outcome.reason or "")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(MLFLOW_HTTP_REQUEST_MAX_RETRIES.default)


def test_no_secret_reaches_mlflow_params_tags_artifacts_or_logs(
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    canaries = ["CANARY-cfg-token-91", "CANARY-cfg-url-92", "CANARY-uri-93"]
    save_dir = make_save_dir(
        tmp_path,
        "run-k",
        hf_token=canaries[0],
        db=f"postgresql://u:{canaries[1]}@db/x",
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.replace("http://", f"http://user:{canaries[2]}@"))
    [outcome] = relog([save_dir])
    client = MlflowClient(mlflow_server)
    run = client.get_run(outcome.run_id)
    seen = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    for artifact in client.list_artifacts(outcome.run_id):
        if not artifact.is_dir and artifact.path.endswith((".lock", ".json")):
            seen += Path(client.download_artifacts(outcome.run_id, artifact.path, str(tmp_path))).read_text()
    out, err = capfd.readouterr()
    seen += out + err + caplog.text
    for canary in canaries:
        assert canary not in seen


def test_the_cli_relogs_a_root_and_reconciles(mlflow_server: str, tmp_path: Path) -> None:
    save_dirs = [make_save_dir(tmp_path / "runs", f"cli-{i}") for i in range(2)]
    relogged = cli("relog", "--root", str(tmp_path / "runs"))
    assert relogged.returncode == 0, relogged.stderr
    assert relogged.stdout.count("│ relogged ") == 2 and "2 save_dirs: 2 relogged, 0 failed" in relogged.stdout
    assert cli("relog", *save_dirs).stdout.count("│ skipped ") == 2
    assert cli("relog", "--force", save_dirs[0]).stdout.count("│ relogged ") == 1
    assert_one_chain(save_dirs[0], finished=2)
    reconciled = cli("reconcile", *save_dirs)
    assert reconciled.returncode == 0 and "nothing to repair" in reconciled.stdout
    missing = cli("relog")
    assert missing.returncode == 2 and "--root" in missing.stderr


def test_an_s3_save_dir_is_relogged_with_its_outputs(mlflow_server: str, s3_bucket: str, tmp_path: Path) -> None:
    from flexlock_prefect import storage

    data = tmp_path / "data.csv"
    data.write_text("x\n1\n")
    save_dir = f"{s3_bucket}/runs/remote"
    _, lock = capture_run(
        {"project": "supersede-tests", "input_data": str(data), "save_dir": save_dir}, data=["input_data"]
    )
    lock.save()
    storage.write_atomic(f"{save_dir}/metrics.json", json.dumps({"acc": 0.8}).encode())
    storage.write_atomic(f"{save_dir}/plot.png", b"\x89PNG fake")
    [outcome] = relog(root=f"{s3_bucket}/runs")
    run = MlflowClient().get_run(outcome.run_id)
    assert outcome.save_dir == save_dir and run.data.metrics == {"acc": 0.8}
    assert {"run.lock", "metrics.json", "plot.png"} <= {a.path for a in MlflowClient().list_artifacts(outcome.run_id)}
