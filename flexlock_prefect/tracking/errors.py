"""What an MLflow error means: one `FlexlockError`, told by MLflow's error code, credentials stripped.

Both ways flexlock wraps MLflow calls end here: `Tracking.errors()` around runs (relog,
reconcile, `mlflowlink`) and the registry's `model_state.mlflow_errors` around registered models. Missing
credentials or permissions, an overloaded server or one that is no MLflow server each say how
to fix them; a missing or refused resource is the caller's `refused` error (a LifecycleError in
the registry); anything else keeps MLflow's first line.
"""

from __future__ import annotations

import re

import requests
from mlflow.exceptions import MlflowException

from flexlock_prefect.exceptions import FlexlockError, TrackingError
from flexlock_prefect.redact import Redactor, strip_url_credentials

NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
"""MLflow's error codes for a model, version, alias or run that does not exist."""
INVALID = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
UNAUTHENTICATED = ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")
OVERLOADED = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
RUN_PERMISSIONS = "creating, logging to and tagging runs needs EDIT on their experiment"
"""What a denied run request needs (MLflow's basic-auth app): the fix of its message."""
_HTTP_ANSWER = re.compile(r"failed with error code (\d+) != \d+\. Response body: '([^']{0,200})")


def meaning(
    uri: str,
    exc: MlflowException | requests.RequestException,
    subject: str | None = None,
    missing: str | None = None,
    *,
    refused: type[FlexlockError] = TrackingError,
    needs: str = RUN_PERMISSIONS,
) -> FlexlockError:
    """The error that `exc`, raised by the MLflow at `uri`, means.

    Args:
        uri: the tracking or registry URI the request went to (its credentials are stripped).
        exc: what MLflow's client (or `requests` under it) raised.
        subject: what the request was about (`'churn' version 3`); without it a missing or
            refused resource reads as a plain failure.
        missing: the message for a subject that does not exist (default: MLflow at <uri> has
            no <subject>).
        refused: the error for a subject that does not exist or was refused as invalid.
        needs: the permissions the request needed, said when the server denies it.

    Example:
        >>> from mlflow.exceptions import RestException
        >>> denied = RestException({"error_code": "PERMISSION_DENIED", "message": "no"})
        >>> print(meaning("https://ana:pw@mlflow.example.com", denied))  # doctest: +ELLIPSIS
        MLflow at https://mlflow.example.com denied this user access (no): ... needs EDIT on their experiment
    """
    where = f"MLflow at {strip_url_credentials(uri)}"

    def about(word: str) -> str:
        return f" {word} {subject}" if subject else ""

    code = getattr(exc, "error_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = Redactor.from_settings().scrub(text.removeprefix(f"{code}: ").replace(uri, strip_url_credentials(uri)))
    if answer := _HTTP_ANSWER.search(detail):  # a proxy's or auth app's non-JSON answer
        detail = f"HTTP {answer[1]}: {answer[2]}"
    if code in NOT_FOUND and (subject or missing):
        return refused(missing or f"{where} has no {subject}")
    if code in INVALID and subject:
        return refused(f"{where} refused {subject} as invalid: {detail}")
    if code in UNAUTHENTICATED:
        return TrackingError(
            f"{where} did not accept the credentials{about('for')}: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
        )
    if code == "PERMISSION_DENIED":
        return TrackingError(f"{where} denied this user access{about('to')} ({detail}): {needs}")
    if code in OVERLOADED:
        return TrackingError(f"{where} is overloaded or unavailable ({code}){about('for')}: try again later")
    if code == "ENDPOINT_NOT_FOUND":
        return TrackingError(f"{where} has no such endpoint{about('for')} (is it an MLflow server?): {detail}")
    return TrackingError(f"{where} failed{about('on')}: {detail}")
