"""What a registered model is now: its aliases and its versions' tags, read for the registry.

One place reads a model's state for the lifecycle moves (`registry`), the `audit` and the
`trace`, each from a registry server checked first with the fast health check of
`tracking.client`, and MLflow's errors there mean what `tracking/errors.py` says: a missing
model or version or a refused value is a LifecycleError; missing credentials or permissions, an
overloaded or unreachable server are a TrackingError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from flexlock_prefect.exceptions import FlexlockError, LifecycleError
from flexlock_prefect.tracking.client import Tracking, bounded_retries, check_tracking_server
from flexlock_prefect.tracking.errors import NOT_FOUND, meaning

MODEL_PERMISSIONS = "setting tags and aliases needs EDIT on the model, deleting an alias MANAGE"
"""What a denied registry request needs (MLflow's basic-auth app): the fix of its message."""


def connect(client: MlflowClient | None = None) -> Tracking:
    """The model registry `client` talks to (default: the configured one), its server checked.

    Checked afresh on every call: registry calls are rare, and a server gone since the last check
    would otherwise cost MLflow's minutes of retries.
    """
    client = client or MlflowClient()
    uri = getattr(client, "_registry_uri", None) or mlflow.get_registry_uri()  # MLflow has no public getter
    check_tracking_server(uri, healthy_for_s=0)
    return Tracking(uri, client)


@contextmanager
def mlflow_errors(tracking: Tracking, subject: str, missing: str | None = None) -> Iterator[None]:
    """MLflow errors inside the block become what they mean for `subject` (`'churn' version 3`),
    a missing or refused one a LifecycleError; `missing` is the message for one that does not
    exist (default: MLflow at <uri> has no <subject>). Its requests give up on a lost server
    within seconds (`bounded_retries`)."""
    try:
        with bounded_retries():
            yield
    except (MlflowException, requests.RequestException) as exc:
        raise _meaning(tracking, exc, subject, missing) from None  # MLflow's text may hold the URI's credentials


def _meaning(
    tracking: Tracking, exc: MlflowException | requests.RequestException, subject: str, missing: str | None = None
) -> FlexlockError:
    return meaning(tracking.uri, exc, subject, missing, refused=LifecycleError, needs=MODEL_PERMISSIONS)


@dataclass
class ModelState:
    """What was read of one registered model (by a move, the audit or a trace); a move keeps it up to
    date with its own writes."""

    name: str
    aliases: dict[str, str]  # alias -> version
    tags: dict[str, dict[str, str]]  # version -> its tags
    descriptions: dict[str, str]  # version -> its description

    def tags_of(self, tracking: Tracking, version: str) -> dict[str, str]:
        """A version's tags, read once more only if the search did not list it (a LifecycleError
        then says whether it is missing or no version at all)."""
        if version not in self.tags:
            found = model_version(tracking, self.name, version)
            self.tags[version], self.descriptions[version] = dict(found.tags), found.description or ""
        return self.tags[version]


def read_model(tracking: Tracking, model: str) -> ModelState:
    """The model's aliases and every version's tags: two requests (a LifecycleError if it is missing)."""
    aliases = model_aliases(tracking, model)
    with mlflow_errors(tracking, f"the versions of registered model {model!r}"):
        versions = tracking.client.search_model_versions(name_filter(model))
    return ModelState(  # MLflow gives an int version here
        model,
        aliases,
        {str(v.version): dict(v.tags) for v in versions},
        {str(v.version): v.description or "" for v in versions},
    )


def model_aliases(tracking: Tracking, model: str) -> dict[str, str]:
    """Alias → version for every alias of `model`, in one request."""
    # search_model_versions does not fill aliases, the registered model does
    return {alias: str(version) for alias, version in registered_model(tracking, model).aliases.items()}


def model_version(tracking: Tracking, model: str, version: str) -> ModelVersion:
    """One version of a registered model; a LifecycleError says whether the model or the version is missing."""
    try:
        with bounded_retries():
            return tracking.client.get_model_version(model, str(version))
    except (MlflowException, requests.RequestException) as exc:
        if getattr(exc, "error_code", None) in NOT_FOUND:
            registered_model(tracking, model)  # says so if the model itself is missing
            raise LifecycleError(f"registered model {model!r} has no version {version}") from None
        raise _meaning(tracking, exc, f"{model!r} version {version!r}") from None


def registered_model(tracking: Tracking, model: str) -> RegisteredModel:
    """The registered model `model` (a LifecycleError if there is none)."""
    missing = f"no registered model named {model!r}: check the name, or register it first"
    with mlflow_errors(tracking, f"registered model {model!r}", missing=missing):
        return tracking.client.get_registered_model(model)


def name_filter(model: str) -> str:
    """A model-version search filter on the registered model's name (a quote escaped for MLflow)."""
    escaped = model.replace("'", "\\'")
    return f"name = '{escaped}'"
