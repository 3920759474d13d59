"""The public API's docstring examples run as written, against a real MLflow store (SQLite)."""

from __future__ import annotations

import doctest

import mlflow
import pytest

from flexlock_prefect.tracking import supersede


@pytest.fixture
def own_tracking_uri():
    """The examples point MLflow at a store of their own; the process's URI is put back after."""
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


def test_the_mlflowlink_example_logs_a_superseding_run(own_tracking_uri: None) -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(supersede.mlflowlink, "mlflowlink", globs={"mlflowlink": supersede.mlflowlink}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted > 0
