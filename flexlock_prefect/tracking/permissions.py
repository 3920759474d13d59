"""What the MLflow account may do to a registered model, asked before a move writes anything.

With MLflow's basic-auth app (3.17) EDIT on a model may set its tags and aliases but not
delete an alias; that takes MANAGE. A move that leaves a state deletes that state's alias
after it has set the new one, so with EDIT alone its last write would be refused and the move
left half applied. `require_manage` asks the auth app first (its endpoints for the current user
and for a user's effective permission on a resource, resolved as the server's own check does)
and refuses the move before its first write. A server without the auth app has nothing to ask:
the check passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.utils import rest_utils
from mlflow.utils.credentials import get_default_host_creds, read_mlflow_creds

from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.redact import strip_url_credentials

CURRENT_USER = "/api/2.0/mlflow/users/current"
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"
DELETES_ALIASES = "MANAGE"
"""The permission on a registered model that deleting one of its aliases needs (MLflow 3.17)."""


@dataclass(frozen=True)
class Grant:
    """What one account may do to one registered model: the auth app's permission name
    (READ, USE, EDIT, MANAGE, DENY, NO_PERMISSIONS); an admin may do anything."""

    username: str
    permission: str
    admin: bool = False

    @property
    def may_delete_aliases(self) -> bool:
        return self.admin or self.permission == DELETES_ALIASES


def mlflow_account() -> str | None:
    """The MLflow username this process authenticates as (`MLFLOW_TRACKING_USERNAME`, else
    MLflow's credentials file), None without one (a token or no authentication). Never the
    password or a token: this is what a lifecycle history records as the account of a move."""
    return read_mlflow_creds().username or None


def model_grant(uri: str, model: str) -> Grant | None:
    """The current account's permission on `model` at the registry `uri`; None when there is
    nothing to ask: not an HTTP server, or one without MLflow's auth app (it has no such
    endpoint). MLflow's errors (credentials refused, server lost) are raised as they are."""
    if not uri.startswith(("http://", "https://")):
        return None
    creds = get_default_host_creds(uri)
    answer = rest_utils.http_request(creds, CURRENT_USER, "GET")
    if answer.status_code == 404:
        return None
    user = rest_utils.verify_rest_response(answer, CURRENT_USER).json()["user"]
    if user["is_admin"]:
        return Grant(user["username"], DELETES_ALIASES, admin=True)
    params = {"username": user["username"], "resource_type": "registered_model", "resource_id": model}
    asked = rest_utils.http_request(creds, USER_PERMISSION, "GET", params=params)
    permission = rest_utils.verify_rest_response(asked, USER_PERMISSION)
    return Grant(user["username"], permission.json()["permission"])


def require_manage(uri: str, model: str, move: str, deletes: Sequence[str]) -> None:
    """Refuse `move` (`move churn version 3 to staging`) before its first write when the account
    may not delete the aliases of `model` it `deletes`: one TrackingError naming the permission
    it needs and the one it has. Run it inside `model_state.mlflow_errors` for the server's errors.

    Example:
        >>> require_manage("sqlite:///mlflow.db", "churn", "move churn version 3 to staging", ["dev"])  # no auth
    """
    grant = model_grant(uri, model)
    if grant is None or grant.may_delete_aliases:
        return
    named = ", ".join(repr(alias) for alias in deletes)
    why = " (EDIT may set an alias but not delete one)" if grant.permission == "EDIT" else ""
    raise TrackingError(
        f"MLflow at {strip_url_credentials(uri)} does not let {grant.username!r} {move}: it deletes "
        f"alias{'es' if len(deletes) > 1 else ''} {named}, which needs {DELETES_ALIASES} on the model "
        f"{model!r}, and {grant.username!r} has {grant.permission}{why}; nothing was written"
    )
