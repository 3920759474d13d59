"""The approval wait of a promotion, with Prefect's pause replaced by fakes: only Prefect's pause
timeout reads as "nobody answered". The real pause, resume and timeout are in tests/test_promote.py."""

from __future__ import annotations

import importlib

import httpx
import pytest
from prefect.exceptions import FlowPauseTimeout

from flexlock_prefect.promote import Approval, wait_for_approval

promote_module = importlib.import_module("flexlock_prefect.promote")


def pausing(outcome: object):
    """A stand-in for `pause_flow_run` that returns `outcome`, or raises it if it is an exception."""

    def pause(**kwargs: object) -> object:
        assert kwargs == {"wait_for_input": Approval, "timeout": 30, "poll_interval": 2}
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return pause


def test_the_reviewers_answer_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = Approval(approved=True, reviewer="bo", comment="ship it")
    monkeypatch.setattr(promote_module, "pause_flow_run", pausing(answer))
    assert wait_for_approval(30, 2) is answer


def test_a_pause_timeout_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promote_module, "pause_flow_run", pausing(FlowPauseTimeout("never resumed")))
    assert wait_for_approval(30, 2) is None


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("All connection attempts failed"),
        httpx.HTTPStatusError(
            "Server error '500 Internal Server Error'",
            request=httpx.Request("GET", "http://127.0.0.1:4200/api/flow_runs/x"),
            response=httpx.Response(500),
        ),
        RuntimeError("Flow run cannot be paused: the run is not running"),
    ],
    ids=["unreachable", "server-error", "pause-refused"],
)
def test_any_other_error_of_the_wait_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(promote_module, "pause_flow_run", pausing(error))
    with pytest.raises(type(error)) as caught:
        wait_for_approval(30, 2)
    assert caught.value is error
