"""Batch work reports every item: relog gives each save_dir its outcome and reconcile each logical
run its own, and one that fails never stops the others. Against a real MLflow server (or a
SQLite store of the test's own) and, for locks, the session's Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect import reconcile, relog
from flexlock_prefect.concurrency import run_lock
from flexlock_prefect.exceptions import RunLockError, TrackingError
from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.outcomes import failure_reason
from flexlock_prefect.tracking.tags import ACTIVE, LOGICAL_RUN_ID, LOGICAL_RUN_KEY, STATUS
from tests.helpers.runs import cli, make_save_dir
from tests.helpers.servers import as_user

pytestmark = pytest.mark.one_prefect
CORRUPT = "flexlock: 1\nconfig: ["


def bad_save_dir(root: Path, name: str, text: str = CORRUPT) -> str:
    """A directory whose run.lock holds `text` (corrupt by default); its canonical URL."""
    (root / name).mkdir(parents=True)
    (root / name / "run.lock").write_text(text)
    return f"file://{root / name}"


def one_corrupt_among_three(root: Path) -> tuple[list[str], str]:
    """Save_dirs a and c with a good run.lock, b with a corrupt one: (good, bad)."""
    return [make_save_dir(root, "a"), make_save_dir(root, "c")], bad_save_dir(root, "b")


def by_save_dir(outcomes: list) -> dict:
    return {o.save_dir: o for o in outcomes}


def fails_on_b(save_dir: str, run) -> None:
    """A diag body that cannot read one run's outputs."""
    if save_dir.endswith("/b"):
        raise ValueError("metrics.json of b has no 'acc'")


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001 - the point: an exception with its traceback
        return caught


def test_a_reason_is_one_line_without_credentials_and_says_where_an_error_was_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://CANARY-token@mlflow.example.invalid")
    reason = failure_reason(
        raised(
            RuntimeError("cannot reach postgresql://u:CANARY-pw@db/x\nnor https://CANARY-token@mlflow.example.invalid")
        )
    )
    assert "CANARY" not in reason and "\n" not in reason
    assert reason.startswith("RuntimeError: cannot reach <redacted>db/x; nor https://mlflow.example.invalid (at ")
    assert reason.endswith(" in raised)")
    ours = RunLockError("file:///runs/a/run.lock has run.lock schema version 2; upgrade flexlock-prefect to read it")
    assert failure_reason(raised(ours)) == str(ours)  # flexlock's own messages say what, where and how as they are


@pytest.mark.integration
def test_a_corrupt_save_dir_among_three_fails_alone_and_the_others_are_relogged(
    mlflow_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    good, bad = one_corrupt_among_three(root)

    outcomes = relog(root=str(root))

    assert sorted(o.save_dir for o in outcomes) == sorted([*good, bad])
    found = by_save_dir(outcomes)
    for save_dir in good:
        assert found[save_dir].outcome == "relogged" and found[save_dir].reason is None
        assert MlflowClient().get_run(found[save_dir].run_id).data.tags[STATUS] == ACTIVE
    failed = found[bad]
    assert (failed.outcome, failed.run_id) == ("failed", None)
    assert failed.reason.startswith(f"{bad}/run.lock is not valid YAML (truncated or corrupt?)")
    assert "\n" not in failed.reason


@pytest.mark.integration
def test_empty_and_future_schema_run_locks_are_failed_outcomes_with_their_reason(
    mlflow_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    good = make_save_dir(root, "good")
    empty, future = bad_save_dir(root, "empty", ""), bad_save_dir(root, "future", "flexlock: 99\n")

    found = by_save_dir(relog(root=str(root)))

    assert found[good].outcome == "relogged"
    assert found[empty].outcome == "failed" and "is not a run.lock" in found[empty].reason
    assert found[future].outcome == "failed" and "schema version 99" in found[future].reason
    assert "upgrade flexlock-prefect" in found[future].reason


@pytest.mark.integration
def test_a_body_that_raises_on_one_save_dir_fails_it_alone_and_keeps_its_active_run(
    mlflow_server: str, tmp_path: Path
) -> None:
    save_dirs = [make_save_dir(tmp_path / "runs", name) for name in ("a", "b", "c")]
    before = by_save_dir(relog(save_dirs))  # the standard body: each gets an active run

    found = by_save_dir(relog(save_dirs, diag=fails_on_b))  # another body: nothing is up to date

    a, b, c = save_dirs
    assert [found[s].outcome for s in save_dirs] == ["relogged", "failed", "relogged"]
    assert found[a].superseded_run_ids == [before[a].run_id]
    assert found[b].reason.startswith("ValueError: metrics.json of b has no 'acc' (at test_relog.py:")
    assert found[b].reason.endswith(" in fails_on_b)")
    client = MlflowClient()
    assert client.get_run(found[b].run_id).info.status == "FAILED"  # the run the failed relog left
    assert client.get_run(before[b].run_id).data.tags[STATUS] == ACTIVE


@pytest.mark.integration
def test_filtering_by_main_flow_makes_a_corrupt_run_lock_a_failed_outcome(mlflow_server: str, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    mine = make_save_dir(root, "mine", recorded_by="train-b")
    make_save_dir(root, "theirs", recorded_by="train-a")
    bad = bad_save_dir(root, "bad")

    outcomes = relog(root=str(root), recorded_by="train-b")

    assert sorted((o.save_dir, o.outcome) for o in outcomes) == sorted([(mine, "relogged"), (bad, "failed")])
    assert by_save_dir(outcomes)[bad].reason.startswith(f"{bad}/run.lock is not valid YAML")


@pytest.mark.integration
def test_the_cli_prints_every_save_dirs_outcome_and_exits_1_without_a_traceback(
    mlflow_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    good, bad = one_corrupt_among_three(root)

    result = cli("relog", "--root", str(root), columns=600)

    assert result.returncode == 1, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "file://" in line}
    assert set(rows) == {*good, bad}
    assert all(" relogged " in rows[save_dir] for save_dir in good)
    assert " failed " in rows[bad] and "run.lock is not valid YAML (truncated or corrupt?)" in rows[bad]
    assert "3 save_dirs: 2 relogged, 1 failed" in result.stdout
    assert f"error: 1 of 3 save_dirs failed to relog: {bad};" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.integration
def test_a_relog_or_reconcile_the_server_refuses_says_which_permission_or_credentials_it_needs(
    auth_server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind MLflow's basic-auth app, as a user who may only read the experiment `churn`."""
    url, password = auth_server
    save_dir = make_save_dir(tmp_path / "runs", "a")
    as_user(monkeypatch, url, "reader", password)

    [denied] = relog([save_dir], experiment="churn")

    assert denied.outcome == "failed"
    assert denied.reason == (
        f"MLflow at {url} denied this user access (HTTP 403: Permission denied): creating, logging to and "
        "tagging runs needs EDIT on their experiment"
    )
    as_user(monkeypatch, url, "reader", "not-the-password")
    [refused] = relog([save_dir], experiment="churn")
    assert refused.reason.startswith(f"MLflow at {url} did not accept the credentials: set MLFLOW_TRACKING_USERNAME")
    with pytest.raises(TrackingError, match=f"^MLflow at {url} did not accept the credentials: "):
        reconcile()


def test_the_cli_exits_2_in_one_line_when_the_tracking_server_is_unreachable(tmp_path: Path) -> None:
    from tests.helpers.servers import free_port

    make_save_dir(tmp_path / "runs", "a")
    bad_save_dir(tmp_path / "runs", "b")
    result = cli("relog", "--root", str(tmp_path / "runs"), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is unreachable after 3 attempts" in result.stderr


def broken_chains(root: Path, names: tuple[str, ...]) -> list[str]:
    """save_dirs relogged twice, each left with two active runs by a crash between the steps."""
    save_dirs = [make_save_dir(root, name) for name in names]
    first = relog(save_dirs)
    relog(save_dirs, force=True)
    for outcome in first:
        MlflowClient().set_tag(outcome.run_id, STATUS, ACTIVE)
    return save_dirs


def active_run_ids(save_dir: str) -> list[str]:
    client = MlflowClient()
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{LOGICAL_RUN_KEY}` = '{logical_run_key(save_dir)}' AND tags.`{STATUS}` = '{ACTIVE}'",
    )
    return [r.info.run_id for r in runs]


@pytest.mark.integration
def test_reconcile_reports_a_logical_run_whose_lock_stays_taken_and_repairs_the_others(
    mlflow_server: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serialised (`prefect_api`): the test holds b's Prefect lock, as a relog of b in flight
    would, and reconcile gives up on b after `FLEXLOCK_LOCK_TIMEOUT_S`."""
    a, b, c = broken_chains(tmp_path / "runs", ("a", "b", "c"))
    monkeypatch.setenv("FLEXLOCK_LOCK_TIMEOUT_S", "1")

    with run_lock(logical_run_key(b)):
        outcomes = reconcile([a, b, c])

    assert [(o.save_dir, o.outcome) for o in outcomes] == [(a, "repaired"), (b, "failed"), (c, "repaired")]
    assert outcomes[1].reason.startswith(f"lock flexlock-run-{logical_run_key(b)} is still held by pid")
    assert outcomes[1].repairs == [] and len(active_run_ids(b)) == 2  # untouched
    assert len(active_run_ids(a)) == 1 and len(active_run_ids(c)) == 1
    assert [o.outcome for o in reconcile([a, b, c])] == ["sound", "repaired", "sound"]


@pytest.mark.integration
def test_the_cli_reconcile_prints_each_logical_runs_result_and_exits_1_if_one_failed(
    mlflow_server: str, prefect_api: str, tmp_path: Path
) -> None:
    a, b = broken_chains(tmp_path / "runs", ("a", "b"))

    with run_lock(logical_run_key(b)):  # held by this process; the CLI's reconcile waits 1 s for it
        result = cli("reconcile", a, b, columns=600, FLEXLOCK_LOCK_TIMEOUT_S="1")

    assert result.returncode == 1, result.stderr
    rows = [line for line in result.stdout.splitlines() if "file://" in line]
    assert {line.split()[1] for line in rows} == {a, b}
    [repaired] = [line for line in rows if a in line]  # one row per repair: the older run, deprecated again
    assert " repaired " in repaired and "flexlock.status=deprecated" in repaired
    [failed] = [line for line in rows if b in line]
    assert " failed " in failed and "is still held by pid" in failed
    assert "2 logical runs: 1 repaired, 1 failed" in result.stdout
    assert f"error: 1 of 2 logical runs failed to reconcile: {b};" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_mlflow_error_on_one_chain_fails_that_logical_run_and_the_others_are_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole store is reconciled, so it is the test's own (SQLite). A run tagged by hand with
    a key MLflow cannot search on makes MLflow refuse the search of that chain."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    a, b = broken_chains(tmp_path / "runs", ("a", "b"))
    client = MlflowClient()
    odd = client.create_run(
        client.get_experiment_by_name("supersede-tests").experiment_id,
        tags={LOGICAL_RUN_KEY: "it's", LOGICAL_RUN_ID: "file:///elsewhere/odd"},
    )
    client.set_terminated(odd.info.run_id)

    outcomes = reconcile()

    found = by_save_dir(outcomes)
    assert sorted(found) == sorted([a, b, "file:///elsewhere/odd"])
    assert found[a].outcome == found[b].outcome == "repaired"
    assert len(active_run_ids(a)) == 1 and len(active_run_ids(b)) == 1
    failed = found["file:///elsewhere/odd"]
    assert (failed.logical_run_key, failed.outcome) == ("it's", "failed")
    assert failed.reason.startswith(f"MLflow at sqlite:///{tmp_path}/mlflow.db failed: Invalid clause(s) in filter")
