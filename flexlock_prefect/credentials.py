"""MLflow credentials from a Prefect `Secret` block, so that workers need none in their environment.

Name the block in `FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK`; its value is JSON, either
`{"username": "...", "password": "..."}` (MLflow's basic-auth app) or `{"token": "..."}` (a
bearer token). Every flexlock flow that talks to MLflow (a diag, relog-all, promote, registry-audit, a
sweep's parent relog) reads it when its run starts and sets it, for the run, as MLflow's own
variables (`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` or `MLFLOW_TRACKING_TOKEN`),
which MLflow's client reads at each request; the previous values are back when the run ends.

The values are never a flow parameter, a log line, an artifact or an MLflow field, and never
written to disk. Credentials already in the environment win: a block fills in only an environment
that has none, so one machine can still use its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.prefect_errors import prefect_api_errors
from flexlock_prefect.settings import get_settings, temporary_environment

MLFLOW_CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@contextmanager
def mlflow_credentials() -> Iterator[None]:
    """Inside the block, MLflow's credentials come from the configured Secret block (if any, and
    if the environment has none).

    Raises:
        FlexlockError: the block is missing, unreadable, or its value is not one of the two forms.
    """
    name = get_settings().mlflow_credentials_block
    if not name or any(os.environ.get(variable) for variable in MLFLOW_CREDENTIAL_VARIABLES):
        yield
        return
    with temporary_environment(as_environment(read_block(name), name)):
        yield


def read_block(name: str) -> Any:
    """The value of the Secret block `name`, through the Prefect API."""
    from prefect.blocks.system import Secret

    with prefect_api_errors(f"read the Secret block {name!r} (FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK)"):
        try:
            return Secret.load(name).get()
        except ValueError:  # Prefect's "Unable to find block document named …"
            raise FlexlockError(
                f"no Secret block {name!r} on this Prefect server (FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK): create it, "
                "e.g. `Secret(value={'username': …, 'password': …}).save(name)`, or unset the setting"
            ) from None


def as_environment(value: Any, name: str) -> dict[str, str]:
    """MLflow's variables for a block value: `{username, password}` or `{token}`, as a mapping or its JSON.

    Example:
        >>> as_environment('{"token": "t"}', "mlflow")
        {'MLFLOW_TRACKING_TOKEN': 't'}
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if isinstance(value, Mapping) and set(value) == {"token"} and _texts(value):
        return {"MLFLOW_TRACKING_TOKEN": value["token"]}
    if isinstance(value, Mapping) and set(value) == {"username", "password"} and _texts(value):
        return {"MLFLOW_TRACKING_USERNAME": value["username"], "MLFLOW_TRACKING_PASSWORD": value["password"]}
    raise FlexlockError(  # never the value itself: it is a secret, whatever its shape
        f"the Secret block {name!r} (FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK) must hold JSON "
        '{"username": …, "password": …} or {"token": …}'
    )


def _texts(value: Mapping[str, Any]) -> bool:
    return all(isinstance(item, str) and item for item in value.values())
