"""Create the workers' MLflow account on a basic-auth tracking server, or reset its password.

The scale-out configuration (`compose.yaml`'s `deploy` step, the README's plain commands) runs
the flows as one MLflow account that is not the admin: it creates the experiments and registered
models it logs to, so MLflow's auth app gives it MANAGE on those and nothing else, while people
keep the server's `default_permission` (READ). Everything comes from the environment:

    MLFLOW_TRACKING_URI                                      the server
    MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD   the admin, who creates the account
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD       the account, as the workers use it

Running it again sets the password anew (a rotation). It prints the account's name, never a
password, and exits 2 with one line when something is missing or refused.
"""

from __future__ import annotations

import os
import sys

import requests

from flexlock_prefect.redact import strip_url_credentials

REQUIRED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def ensure_account(url: str, admin: tuple[str, str], username: str, password: str) -> str:
    """Create `username` with `password`, or set its password if it exists; says which."""
    account = {"username": username, "password": password}
    with requests.Session() as session:
        session.auth = admin
        created = session.post(f"{url}/api/2.0/mlflow/users/create", json=account, timeout=60)
        if created.ok:
            return "created"
        if "RESOURCE_ALREADY_EXISTS" not in created.text:
            raise RuntimeError(f"creating the account {username!r} at {url} answered HTTP {created.status_code}")
        updated = session.patch(f"{url}/api/2.0/mlflow/users/update-password", json=account, timeout=60)
        if not updated.ok:
            raise RuntimeError(f"setting the password of {username!r} at {url} answered HTTP {updated.status_code}")
        return "password set"


def main() -> int:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"mlflow_account: set {', '.join(missing)} in the environment", file=sys.stderr)
        return 2
    env = os.environ
    url = strip_url_credentials(env["MLFLOW_TRACKING_URI"]).rstrip("/")  # shown in messages
    try:
        done = ensure_account(
            url,
            (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"]),
            env["MLFLOW_TRACKING_USERNAME"],
            env["MLFLOW_TRACKING_PASSWORD"],
        )
    except (RuntimeError, requests.RequestException) as exc:
        print(f"mlflow_account: {exc}", file=sys.stderr)
        return 2
    print(f"MLflow account {env['MLFLOW_TRACKING_USERNAME']!r}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
