"""`bounded_retries`: inside flexlock's MLflow operations a lost server fails a request within
seconds, the user's own MLflow settings win, and the environment is restored afterwards."""

from __future__ import annotations

import os
import threading

import pytest

from flexlock_prefect.tracking.client import bounded_retries

RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"


@pytest.fixture(autouse=True)
def mlflow_retry_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own defaults: neither variable set."""
    monkeypatch.delenv(RETRIES, raising=False)
    monkeypatch.delenv(BACKOFF, raising=False)


def test_inside_the_block_mlflow_retries_follow_the_setting_and_are_unset_again_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEXLOCK_TRACKING_RETRIES", "2")
    with bounded_retries():
        assert (os.environ[RETRIES], os.environ[BACKOFF]) == ("2", "1")
    assert RETRIES not in os.environ and BACKOFF not in os.environ


def test_a_retry_policy_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETRIES, "7")
    with bounded_retries():
        assert (os.environ[RETRIES], os.environ[BACKOFF]) == ("7", "1")
    assert os.environ[RETRIES] == "7" and BACKOFF not in os.environ


def test_overlapping_blocks_in_threads_restore_only_when_the_last_one_ends() -> None:
    entered, first_left = threading.Event(), threading.Event()
    seen_after_first: list[str | None] = []

    def second_block() -> None:
        with bounded_retries():
            entered.set()
            first_left.wait()
            seen_after_first.append(os.environ.get(RETRIES))

    thread = threading.Thread(target=second_block)
    with bounded_retries():
        thread.start()
        entered.wait()
    first_left.set()
    thread.join()
    assert seen_after_first == ["3"]  # the default, FLEXLOCK_TRACKING_RETRIES=3
    assert RETRIES not in os.environ
