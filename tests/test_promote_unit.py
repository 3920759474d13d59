"""promote.py's pieces without servers: the approval wait with Prefect's pause replaced by fakes
(only Prefect's pause timeout reads as "nobody answered"), and the evidence report. The real
flow, pause, resume and timeout are in tests/test_promote.py."""

from __future__ import annotations

import importlib

import httpx
import pytest
from prefect.exceptions import FlowPauseTimeout

from flexlock_prefect.promote import Approval, evidence_markdown, wait_for_approval
from flexlock_prefect.rules import Candidate

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


def test_the_evidence_notes_a_target_holder_whose_record_is_gone_without_failing_it() -> None:
    candidate = Candidate("churn", "3", "run-3", {"accuracy": 0.91}, None, "its save_dir file:///runs/3 is gone")
    holder = Candidate("churn", "1", "run-1", {"accuracy": 0.9}, None, "its save_dir file:///runs/1 is gone")
    report = evidence_markdown(candidate, holder, "archived", [])
    assert "- ✅ active flexlock run, run.lock verifies, metric rules hold" in report
    assert (
        "- ⚠️ the archived holder, version 1: its save_dir file:///runs/1 is gone (not checked; no input diff)" in report
    )
    assert "| accuracy | 0.91 | 0.9 | +0.01 |" in report and "Inputs that differ" not in report


def test_the_evidence_lists_every_failed_check() -> None:
    candidate = Candidate("churn", "3", "run-3", {}, None, "its run run-3 has no flexlock run record")
    report = evidence_markdown(candidate, None, "staging", ["version 3: its run run-3 has no flexlock run record"])
    assert "- ❌ version 3: its run run-3 has no flexlock run record" in report and "✅" not in report
    assert "candidate vs staging holder (none)" in report
