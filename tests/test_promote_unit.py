"""promote.py's pieces without servers: the approval wait with Prefect's pause replaced by fakes
(only Prefect's pause timeout reads as "nobody answered"), and the evidence report. The real
flow, pause, resume and timeout are in tests/test_promote.py."""

from __future__ import annotations

import importlib

import httpx
import pytest
from prefect.exceptions import FlowPauseTimeout
from prefect.settings import PREFECT_UI_URL, temporary_settings
from pydantic import ValidationError

from flexlock_prefect.promote import Approval, approval_form, evidence_markdown, wait_for_approval
from flexlock_prefect.rules import Candidate, rule_results

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
    answer = Approval(decision="approve", reviewer="bo", comment="ship it")
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
    assert "| ✅ | record | the active flexlock run of its save_dir" in report
    assert (
        "| ⚠️ | archived holder | version 1: its save_dir file:///runs/1 is gone (not checked; no input diff) |"
        in report
    )
    assert "| accuracy | 0.9100 | 0.9000 | +0.0100 |" in report and "Inputs that differ" not in report


def test_the_evidence_lists_every_failed_check() -> None:
    candidate = Candidate("churn", "3", "run-3", {}, None, "its run run-3 has no flexlock run record")
    report = evidence_markdown(candidate, None, "staging", ["version 3: its run run-3 has no flexlock run record"])
    assert "| ❌ | record | version 3: its run run-3 has no flexlock run record |" in report
    assert "candidate vs staging holder (none)" in report


def test_the_evidence_lists_every_rule_with_its_outcome_and_links_both_runs() -> None:
    prod = Candidate("churn", "2", "run-2", {"accuracy": 0.9, "loss": 0.2}, None)
    candidate = Candidate("churn", "3", "run-3", {"accuracy": 0.91, "loss": 0.2}, None)
    rules = ["accuracy >= prod.accuracy", "loss < prod.loss", "accuracy >= staging.accuracy"]
    links = {
        "run-2": "http://mlflow.test/#/experiments/1/runs/run-2",
        "run-3": "http://mlflow.test/#/experiments/1/runs/run-3",
    }
    report = evidence_markdown(candidate, prod, "prod", [], rule_results(rules, candidate, {"prod": prod}), links)
    assert "| candidate | 3 | [run-3](http://mlflow.test/#/experiments/1/runs/run-3) |" in report
    assert "| prod holder | 2 | [run-2](http://mlflow.test/#/experiments/1/runs/run-2) |" in report
    assert "| ✅ | `accuracy >= prod.accuracy` | accuracy is 0.91, needs >= 0.9 |" in report
    assert "| ❌ | `loss < prod.loss` | loss is 0.2, needs < 0.2 |" in report
    assert "| ✅ | `accuracy >= staging.accuracy` | no staging version to compare with |" in report
    assert "| loss | 0.2000 | 0.2000 | +0.0000 |" in report  # every number with the same four decimals


def test_the_evidence_ends_with_the_candidates_provenance_as_a_mermaid_block() -> None:
    candidate = Candidate("churn", "3", "run-3", {"accuracy": 0.91}, None)
    flowchart = '```mermaid\nflowchart LR\n  n0["churn version 3"]\n```'
    report = evidence_markdown(candidate, None, "staging", [], provenance=flowchart)
    assert report.endswith(f"\n## Provenance\n\n{flowchart}\n")
    assert "Provenance" not in evidence_markdown(candidate, None, "staging", [])


def test_the_approval_form_starts_undecided_and_points_to_the_evidence() -> None:
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        form = approval_form("churn", "3", "staging", "prod", "0b7c", holder="2")
        first = approval_form("churn", "1", "staging", "prod", "0b7d")
    assert "**Move churn version 3: staging → prod.**" in form._description
    assert "(checks, metrics and inputs against version 2, now in prod)" in form._description
    assert "(checks and metrics; no version is in prod yet)" in first._description
    assert "[the evidence](http://127.0.0.1:4200/artifacts/artifact/0b7c)" in form._description
    with pytest.raises(ValidationError, match="decision"):
        form(reviewer="bo")  # a form submitted unchanged neither approves nor rejects
    assert form(decision="reject", reviewer="bo").approved is False
