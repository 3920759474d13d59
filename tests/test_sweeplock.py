"""sweep.lock: written atomically, read back checked, and what a trial's save_dir says of the trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flexlock_prefect.capture import capture_run
from flexlock_prefect.exceptions import SweepError
from flexlock_prefect.lock import RunLock, RunResult
from flexlock_prefect.study import Space, Study, Trial, TrialPlanner, plan_study, trial_partial
from flexlock_prefect.sweeplock import SweepLock, SweepRecord, TrialRecord, outcome, reusable

CONFIG = {"lr": 0.1, "seed": 0, "save_dir": "???"}


def capture(partial: dict) -> RunLock:
    return capture_run(CONFIG, partial=partial)[1]


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return plan_study(Space.of(grid={"lr": [0.1, 0.2, 0.3]}), TrialPlanner.of(str(tmp_path / "sweep"), capture))


def ran(trial: Trial, status: str = "completed", metrics: dict | None = None, **config: object) -> RunLock:
    """The trial's save_dir as its run leaves it: run.lock with a result, and metrics.json."""
    lock = capture(trial_partial(trial.point | config, trial.save_dir))
    result = RunResult(
        status=status,
        started_at="t0",
        finished_at="t1",
        duration_s=1.0,
        outputs={},
        error=None if status == "completed" else "ValueError: boom",
    )
    lock.with_result(result).save()
    if metrics is not None:
        Path(trial.save_dir.removeprefix("file://"), "metrics.json").write_text(json.dumps(metrics))
    return lock


def test_sweep_lock_holds_the_study_and_every_trial_and_reads_back(study: Study, tmp_path: Path) -> None:
    lock = SweepLock.create(str(tmp_path / "sweep"), study, "train", "acc", "max")
    url = lock.save()
    assert url == f"file://{tmp_path}/sweep/sweep.lock"
    assert SweepLock.load(str(tmp_path / "sweep")) == lock
    written = yaml.safe_load((tmp_path / "sweep" / "sweep.lock").read_text())
    assert list(written) == [
        "flexlock",
        "root",
        "study_key_hash",
        "flow",
        "created_at",
        "updated_at",
        "base",
        "space",
        "metric",
        "mode",
        "n_trials",
        "trials",
        "best",
    ]
    assert written["space"] == {"grid": {"lr": [0.1, 0.2, 0.3]}} and written["base"]["config"] == {"seed": 0}
    assert [t["status"] for t in written["trials"]] == ["pending"] * 3
    assert written["trials"][0] == {
        "trial_key_hash": study.trials[0].key,
        "values": {"lr": 0.1},
        "save_dir": study.trials[0].save_dir,
        "status": "pending",
        "reused": False,
        "fingerprint": None,
        "flow_run_id": None,
        "metric_value": None,
        "error": None,
    }


def test_a_hand_edited_or_unknown_sweep_lock_is_refused(study: Study, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    SweepLock.create(str(root), study, "train", None, "max").save()
    path = root / "sweep.lock"
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(SweepError, match="the study key does not match the recorded base and space"):
        SweepLock.load(str(root))
    path.write_text("flexlock: 9\n")
    with pytest.raises(SweepError, match="schema version 9; this flexlock-prefect reads version 1"):
        SweepLock.load(str(root))
    with pytest.raises(SweepError, match="no sweep.lock in"):
        SweepLock.load(str(tmp_path / "nowhere"))


def test_each_update_rewrites_the_file_and_ranks_the_trials(study: Study, tmp_path: Path) -> None:
    record = SweepRecord(SweepLock.create(str(tmp_path / "sweep"), study, "train", "loss", "min"))
    scores = {0: 0.5, 1: 0.2, 2: 0.2}
    for index, trial in enumerate(study.trials):
        ran(trial, metrics={"loss": scores[index], "note": "ok"})
        record.update(outcome(trial, "loss", None, None))
    on_disk = SweepLock.load(str(tmp_path / "sweep"))
    assert on_disk == record.lock and on_disk.count("completed") == 3
    assert on_disk.best.trial_key_hash == study.trials[1].key  # of equal values, the first listed
    assert (on_disk.best.metric, on_disk.best.value, on_disk.best.values) == ("loss", 0.2, {"lr": 0.2})


def test_a_completed_run_with_the_trials_inputs_is_reused_and_anything_else_runs(study: Study) -> None:
    done, failed, changed = study.trials
    ran(done, metrics={"acc": 0.9})
    ran(failed, status="failed")
    ran(changed, seed=5)  # the save_dir holds a run of other inputs
    reused = reusable(done, "acc")
    assert (reused.status, reused.reused, reused.fingerprint, reused.metric_value) == ("completed", True, done.key, 0.9)
    assert reusable(failed, "acc") is None and reusable(changed, "acc") is None
    assert reusable(Trial("0" * 64, {}, {}, f"{done.save_dir}-missing"), "acc") is None


def test_a_trial_that_failed_is_recorded_with_its_runs_error_or_the_flow_runs(study: Study) -> None:
    first, second, _ = study.trials
    ran(first, status="failed")
    failed = outcome(first, None, "run-1", "Flow run encountered an exception: ValueError: boom")
    assert (failed.status, failed.error, failed.flow_run_id) == ("failed", "ValueError: boom", "run-1")
    never_started = outcome(second, None, None, "RuntimeError: no worker")
    assert (never_started.status, never_started.error) == ("failed", "RuntimeError: no worker")


def test_a_metric_missing_from_metrics_json_ranks_nothing(study: Study, tmp_path: Path, caplog) -> None:
    record = SweepRecord(SweepLock.create(str(tmp_path / "sweep"), study, "train", "acc", "max"))
    ran(study.trials[0], metrics={"loss": 0.1})
    lock = record.update(outcome(study.trials[0], "acc", None, None))
    assert lock.trials[0].metric_value is None and lock.best is None
    assert "has no metric 'acc' in metrics.json (it has ['loss'])" in caplog.text


def test_a_running_trial_is_recorded_as_running(study: Study, tmp_path: Path) -> None:
    record = SweepRecord(SweepLock.create(str(tmp_path / "sweep"), study, "train", None, "max"))
    record.update(TrialRecord.planned(study.trials[0]).model_copy(update={"status": "running"}))
    assert [t.status for t in SweepLock.load(str(tmp_path / "sweep")).trials] == ["running", "pending", "pending"]
