"""What an MLflow error means (`tracking/errors.py`): told by its error code, credentials stripped,
the same for runs (`Tracking.errors()`) and the registry (`model_state.mlflow_errors`).

The same errors from real servers (a missing model, a stopped server, refused credentials and
permissions) are in tests/test_registry.py and tests/test_relog.py; here every code MLflow has is
mapped, without servers.
"""

from __future__ import annotations

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import ErrorCode

from flexlock_prefect.exceptions import FlexlockError, LifecycleError, TrackingError
from flexlock_prefect.tracking.client import Tracking
from flexlock_prefect.tracking.model_state import mlflow_errors

URI = "https://ana:hunter2@mlflow.example.com"
TRACKING = Tracking(URI, MlflowClient(tracking_uri="sqlite:///:memory:"))
SUBJECT = "registered model 'churn'"


def error(code: str, message: str = "details") -> MlflowException:
    """What MLflow's REST client raises for a JSON error answer."""
    return RestException({"error_code": code, "message": message})


def in_registry(exc: Exception, missing: str | None = None) -> FlexlockError:
    """What `exc` becomes when a registry call about SUBJECT raises it."""
    with pytest.raises(FlexlockError) as caught, mlflow_errors(TRACKING, SUBJECT, missing=missing):
        raise exc
    return caught.value


def in_runs(exc: Exception) -> FlexlockError:
    """What `exc` becomes when a relog's or reconcile's request raises it."""
    with pytest.raises(FlexlockError) as caught, TRACKING.errors():
        raise exc
    return caught.value


@pytest.mark.parametrize(
    ("code", "kind", "says"),
    [
        ("RESOURCE_DOES_NOT_EXIST", LifecycleError, "no such model"),
        ("NOT_FOUND", LifecycleError, "no such model"),
        ("INVALID_PARAMETER_VALUE", LifecycleError, f"refused {SUBJECT} as invalid: details"),
        ("BAD_REQUEST", LifecycleError, f"refused {SUBJECT} as invalid: details"),
        ("UNAUTHENTICATED", TrackingError, "did not accept the credentials"),
        ("PERMISSION_DENIED", TrackingError, f"denied this user access to {SUBJECT} (details)"),
        ("TEMPORARILY_UNAVAILABLE", TrackingError, "is overloaded or unavailable (TEMPORARILY_UNAVAILABLE)"),
        ("REQUEST_LIMIT_EXCEEDED", TrackingError, "is overloaded or unavailable (REQUEST_LIMIT_EXCEEDED)"),
        ("ENDPOINT_NOT_FOUND", TrackingError, "has no such endpoint"),
        ("INTERNAL_ERROR", TrackingError, f"failed on {SUBJECT}: details"),
        ("RESOURCE_CONFLICT", TrackingError, f"failed on {SUBJECT}: details"),
    ],
)
def test_each_error_code_says_what_it_means_to_the_registry(code: str, kind: type, says: str) -> None:
    found = in_registry(error(code), missing="no such model")
    assert type(found) is kind and says in str(found)
    assert str(found).startswith("no such model") or str(found).startswith("MLflow at https://mlflow.example.com ")


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("RESOURCE_DOES_NOT_EXIST", "failed: details"),
        ("INVALID_PARAMETER_VALUE", "failed: details"),
        (
            "UNAUTHENTICATED",
            "did not accept the credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN",
        ),
        (
            "PERMISSION_DENIED",
            "denied this user access (details): creating, logging to and tagging runs needs EDIT on their experiment",
        ),
        ("TEMPORARILY_UNAVAILABLE", "is overloaded or unavailable (TEMPORARILY_UNAVAILABLE): try again later"),
        ("ENDPOINT_NOT_FOUND", "has no such endpoint (is it an MLflow server?): details"),
        ("INTERNAL_ERROR", "failed: details"),
    ],
)
def test_each_error_code_says_what_it_means_to_a_relog(code: str, says: str) -> None:
    """The registry's meanings, without a subject, and every one a TrackingError: a missing or
    refused run or experiment says nothing about the registry lifecycle."""
    found = in_runs(error(code))
    assert type(found) is TrackingError and str(found) == f"MLflow at https://mlflow.example.com {says}"


def test_a_denied_registry_request_says_what_a_model_needs_and_a_denied_run_what_an_experiment_needs() -> None:
    assert str(in_registry(error("PERMISSION_DENIED"))).endswith("needs EDIT on the model, deleting an alias MANAGE")
    assert str(in_runs(error("PERMISSION_DENIED"))).endswith("needs EDIT on their experiment")


def test_only_a_missing_resource_reads_as_missing() -> None:
    for code in ErrorCode.DESCRIPTOR.values_by_name:
        if code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            assert "no such model" not in str(in_registry(error(code), missing="no such model")), code


def test_a_missing_resource_without_a_message_of_its_own_names_the_server_and_subject() -> None:
    assert (
        str(in_registry(error("RESOURCE_DOES_NOT_EXIST"))) == f"MLflow at https://mlflow.example.com has no {SUBJECT}"
    )


@pytest.mark.parametrize("wrapped", [in_registry, in_runs])
def test_credentials_in_the_message_are_stripped(wrapped) -> None:
    failure = MlflowException(f"API request to {URI}/api/2.0/mlflow/registered-models/get failed with exception boom")
    found = str(wrapped(failure))
    assert "hunter2" not in found and "ana@" not in found
    assert (
        "request to https://mlflow.example.com/api/2.0/mlflow/registered-models/get failed with exception boom" in found
    )


def test_a_non_json_answer_is_shown_by_its_status_and_body() -> None:
    failure = MlflowException(
        "API request to endpoint /api/2.0/mlflow/model-versions/set-tag failed with error code 403 != 200. "
        "Response body: 'Permission denied'",
        error_code=ErrorCode.Value("PERMISSION_DENIED"),
    )
    assert "(HTTP 403: Permission denied)" in str(in_registry(failure))
    assert "(HTTP 403: Permission denied)" in str(in_runs(failure))


def test_a_requests_error_keeps_its_message() -> None:
    for wrapped in (in_registry, in_runs):
        found = wrapped(requests.ConnectionError("connection reset by peer"))
        assert isinstance(found, TrackingError) and str(found).endswith("connection reset by peer")
