"""`bounded_retries`: inside flexlock's MLflow operations a lost server fails a request within
seconds, the user's own MLflow settings win, and afterwards MLflow reads its defaults again,
without a variable ever being deleted under a thread that iterates the environment."""

from __future__ import annotations

import os
import threading

import pytest
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

from flexlock_prefect.tracking.client import bounded_retries

RETRIES = MLFLOW_HTTP_REQUEST_MAX_RETRIES.name
BACKOFF = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name


@pytest.fixture(autouse=True)
def mlflow_retry_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own defaults: neither variable set."""
    monkeypatch.delenv(RETRIES, raising=False)
    monkeypatch.delenv(BACKOFF, raising=False)


def mlflow_reads() -> tuple[int, int]:
    return MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()


def test_inside_the_block_mlflow_retries_follow_the_setting_and_its_defaults_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEXLOCK_TRACKING_RETRIES", "2")
    defaults = mlflow_reads()
    with bounded_retries():
        assert mlflow_reads() == (2, 1)
    assert mlflow_reads() == defaults
    with bounded_retries():  # restored to the defaults, the variables are still flexlock's to set
        assert mlflow_reads() == (2, 1)


def test_a_variable_unset_before_is_restored_to_mlflows_default_not_deleted() -> None:
    """Deleting it could raise KeyError in a thread iterating os.environ (requests does, for proxies)."""
    with bounded_retries():
        pass
    assert (os.environ[RETRIES], os.environ[BACKOFF]) == (
        str(MLFLOW_HTTP_REQUEST_MAX_RETRIES.default),
        str(MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.default),
    )


def test_mlflows_default_inherited_from_a_parent_process_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a process started after a flexlock operation inherits: the bound still applies."""
    monkeypatch.setenv(RETRIES, str(MLFLOW_HTTP_REQUEST_MAX_RETRIES.default))
    with bounded_retries():
        assert mlflow_reads() == (3, 1)


def test_a_retry_policy_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETRIES, "5")
    with bounded_retries():
        assert os.environ[RETRIES] == "5" and os.environ[BACKOFF] == "1"
    assert os.environ[RETRIES] == "5"


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
    assert mlflow_reads() == (MLFLOW_HTTP_REQUEST_MAX_RETRIES.default, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.default)
