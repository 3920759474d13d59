"""What an MLflow error means to a registry call: told by its error code, credentials stripped.

The same errors from real servers (a missing model, a stopped server, refused credentials and
permissions) are in tests/test_registry.py; here every code MLflow has is mapped, without servers.
"""

from __future__ import annotations

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import ErrorCode

from flexlock_prefect.exceptions import LifecycleError, TrackingError
from flexlock_prefect.tracking.client import Tracking
from flexlock_prefect.tracking.registry import meaning

URI = "https://ana:hunter2@mlflow.example.com"
TRACKING = Tracking(URI, MlflowClient(tracking_uri="sqlite:///:memory:"))
SUBJECT = "registered model 'churn'"


def error(code: str, message: str = "details") -> MlflowException:
    """What MLflow's REST client raises for a JSON error answer."""
    return RestException({"error_code": code, "message": message})


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
def test_each_error_code_says_what_it_means(code: str, kind: type, says: str) -> None:
    found = meaning(TRACKING, error(code), SUBJECT, missing="no such model")
    assert type(found) is kind and says in str(found)
    assert str(found).startswith("no such model") or str(found).startswith("MLflow at https://mlflow.example.com ")


def test_only_a_missing_resource_reads_as_missing() -> None:
    for code in ErrorCode.DESCRIPTOR.values_by_name:
        if code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            assert "no such model" not in str(meaning(TRACKING, error(code), SUBJECT, missing="no such model")), code


def test_a_missing_resource_without_a_message_of_its_own_names_the_server_and_subject() -> None:
    found = meaning(TRACKING, error("RESOURCE_DOES_NOT_EXIST"), SUBJECT)
    assert str(found) == f"MLflow at https://mlflow.example.com has no {SUBJECT}"


def test_credentials_in_the_message_are_stripped() -> None:
    failure = MlflowException(f"API request to {URI}/api/2.0/mlflow/registered-models/get failed with exception boom")
    found = str(meaning(TRACKING, failure, SUBJECT))
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
    assert "(HTTP 403: Permission denied)" in str(meaning(TRACKING, failure, SUBJECT))


def test_a_requests_error_keeps_its_message() -> None:
    found = meaning(TRACKING, requests.ConnectionError("connection reset by peer"), SUBJECT)
    assert isinstance(found, TrackingError) and str(found).endswith("connection reset by peer")
