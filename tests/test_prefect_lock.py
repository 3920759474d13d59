"""The Prefect lock of a save_dir never wedges: a waiter frees the lease of a killed holder.

Against both servers users have: `prefect server start` (the session's) and
`prefect.testing.utilities.prefect_test_harness` (what users run their own tests on), whose
server never revokes expired leases. A short lease keeps the tests quick, and a lock timeout of
two leases turns a wedge into a `LockTimeout` instead of a long wait.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect import reconcile, relog
from flexlock_prefect.concurrency import exclusive, record_name
from flexlock_prefect.exceptions import LockTimeout
from flexlock_prefect.tracking.tags import STATUS
from tests.helpers.runs import make_save_dir
from tests.test_supersede import assert_one_chain

LEASE_S = 6

HOLDING_RELOG = textwrap.dedent(
    """
    import sys, time
    from flexlock_prefect import mlflowlink
    with mlflowlink(sys.argv[1]) as run:
        print(run.info.run_id, flush=True)
        time.sleep(600)
    """
)

HOLDING_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flexlock_prefect.concurrency import exclusive
    with exclusive(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))  # the work
        Path(sys.argv[3]).write_text("done")
    """
)


def hold(lock: str, work_s: float, done: Path) -> subprocess.Popen[str]:
    """A process holding `lock` for `work_s` seconds, started once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDING_LOCK, lock, str(work_s), str(done)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXLOCK_LOCK_LEASE_S", str(LEASE_S))
    monkeypatch.setenv("FLEXLOCK_LOCK_TIMEOUT_S", str(2 * LEASE_S))


@pytest.fixture
def harness_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `prefect_test_harness` server, for this process and its subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        url = PREFECT_API_URL.value()
        monkeypatch.setenv("PREFECT_API_URL", url)
        yield url


@pytest.fixture(params=["prefect server start", "prefect_test_harness"])
def any_prefect_api(request: pytest.FixtureRequest) -> str:
    fixture = "prefect_api" if request.param == "prefect server start" else "harness_api"
    return request.getfixturevalue(fixture)


def test_reconcile_and_a_new_relog_proceed_after_a_relog_killed_holding_the_lock(
    mlflow_server: str, any_prefect_api: str, short_lease: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_dir = make_save_dir(tmp_path, "killed-holder")
    good = relog([save_dir])[0]
    proc = subprocess.Popen([sys.executable, "-c", HOLDING_RELOG, save_dir], stdout=subprocess.PIPE, text=True)
    killed_run_id = proc.stdout.readline().strip()  # printed while holding the save_dir's lock
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert MlflowClient().get_run(killed_run_id).info.status == "RUNNING"

    with caplog.at_level(logging.WARNING, logger="flexlock_prefect.concurrency"):
        [outcome] = reconcile([save_dir])  # a wedge would fail it with LockTimeout after two leases
    assert f"pid {proc.pid}" in caplog.text and "freeing the lease" in caplog.text
    assert outcome.outcome == "repaired", outcome.reason
    assert [(r.run_id, r.change) for r in outcome.repairs] == [(killed_run_id, "ended FAILED: its relog died")]
    assert MlflowClient().get_run(good.run_id).data.tags[STATUS] == "active"

    again = relog([save_dir], force=True)[0]
    assert again.outcome == "relogged"
    assert_one_chain(save_dir, finished=2)


def test_a_live_holder_working_longer_than_a_lease_keeps_its_lock(
    prefect_api: str, short_lease: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """It renews every third of a lease, so a waiter never takes it for dead and gets the lock
    only once the holder's work is done."""
    monkeypatch.setenv("FLEXLOCK_LOCK_TIMEOUT_S", str(10 * LEASE_S))
    done = tmp_path / "done"
    holder = hold("flexlock-run-busy", 2.5 * LEASE_S, done)
    with exclusive("flexlock-run-busy"):
        assert done.exists()
    holder.wait()


def test_a_lock_held_past_the_timeout_names_its_holder_and_how_to_free_it(
    prefect_api: str, short_lease: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEXLOCK_LOCK_TIMEOUT_S", "1")
    holder = hold("flexlock-run-held", 600, tmp_path / "done")
    try:
        with pytest.raises(LockTimeout) as raised, exclusive("flexlock-run-held"):
            pass
    finally:
        holder.kill()
        holder.wait()
    message = str(raised.value)
    assert f"pid {holder.pid}" in message
    assert "prefect gcl update flexlock-run-held --active-slots 0" in message
    assert "\n" not in message


def test_a_released_lock_leaves_no_holder_record(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    with exclusive("flexlock-model-My Model") as locked:
        assert locked
        with get_client(sync_client=True) as client:
            assert client.read_variable_by_name(record_name("flexlock-model-My Model")) is not None
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(record_name("flexlock-model-My Model")) is None


def test_holder_record_names_are_valid_prefect_variable_names_and_distinct() -> None:
    assert record_name("flexlock-run-de961c6972ce12f6") == "flexlock-run-de961c6972ce12f6"
    assert record_name("flexlock-model-My Model") != record_name("flexlock-model-my model")
    assert record_name("flexlock-model-My Model").startswith("flexlock-model-my-model-")


def test_a_holder_record_created_by_another_writer_meanwhile_is_overwritten_with_ours(prefect_api: str) -> None:
    """A holder whose lease a waiter freed may still write its record while the new holder
    writes its own: both find none, both create, and the second create must not fail."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate

    from flexlock_prefect.concurrency import HolderRecord, _write_holder, read_holder

    lock = "flexlock-run-0123456789abcdef"
    theirs = HolderRecord("lease-a", "host-a", 1, "2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z")
    ours = HolderRecord("lease-b", "host-b", 2, "2026-12-01T10:01:00Z", "2026-12-01T10:01:00Z")

    class OtherWriterFirst:
        """The real client, but the other writer's create lands just before ours."""

        def __init__(self, client) -> None:
            self.client = client

        def __getattr__(self, name: str):
            return getattr(self.client, name)

        def create_variable(self, variable: VariableCreate):
            self.client.create_variable(VariableCreate(name=variable.name, value=asdict(theirs)))
            return self.client.create_variable(variable)

    with get_client(sync_client=True) as client:
        _write_holder(OtherWriterFirst(client), lock, ours)
        assert read_holder(client, lock) == ours
        client.delete_variable_by_name(record_name(lock))
