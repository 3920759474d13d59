"""The public API's docstring examples run as written, against a real MLflow store (SQLite) where they log."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from flexlock_prefect import provenance, rules, trace_view
from flexlock_prefect.tracking import errors, lifecycle, outcomes, supersede, trace


def test_the_mlflowlink_example_logs_a_superseding_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(supersede.mlflowlink, "mlflowlink", globs={"mlflowlink": supersede.mlflowlink}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0


def test_the_promotion_rules_examples_parse_and_check() -> None:
    results = doctest.testmod(rules, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


def test_the_failure_reason_example_holds() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    reason = outcomes.failure_reason
    for test in finder.find(reason, "failure_reason", globs={"failure_reason": reason}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0


def test_the_error_meaning_example_holds() -> None:
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(errors.meaning, "meaning", globs={"meaning": errors.meaning}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0


def test_the_trace_and_lifecycle_examples_hold() -> None:
    for module in (provenance, trace_view, trace, lifecycle):
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert results.attempted > 0 and results.failed == 0, module.__name__
