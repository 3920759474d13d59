"""★ The lifecycle of registered model versions over MLflow aliases (DESIGN.md §6).

States and aliases: `dev`, `staging`, `prod`, `archived`. The truth for every version is its
tag `flexlock.lifecycle`; an alias names the version that most recently entered its state (so
`prod` names the one production version, `archived` the latest archived one). Allowed moves:
new → dev, dev → staging, staging → prod, any → archived. A version that leaves a state takes
that state's alias with it, and promoting a version to prod archives the version that held
prod. Every move appends `{from, to, at, by, comment, flow_run_id}` to the version's tag
`flexlock.lifecycle_history`. An illegal move, an unknown model, version or state changes
nothing and says why.

Moves of one model serialise on the lock the caller passes (a Prefect global concurrency limit
keyed by the model name, from `promote.py`); outside it, a compare-after-write check makes a
losing concurrent move fail instead of leaving two versions claiming prod.

Every call first checks the registry's server with the fast health check of
`tracking.client` (a server that is down is one TrackingError within seconds, not MLflow's
minutes of retries), and MLflow's errors mean what `tracking/errors.py` says: here a missing
model or version or a refused value is a LifecycleError; missing credentials or permissions,
an overloaded or unreachable server are a TrackingError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flexlock_prefect.exceptions import FlexlockError, LifecycleError
from flexlock_prefect.lock import utc_now
from flexlock_prefect.tracking.client import Tracking, bounded_retries, check_tracking_server
from flexlock_prefect.tracking.errors import NOT_FOUND, meaning
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.tags import APPROVED_AT, APPROVED_BY, HISTORY, LIFECYCLE

STATES = ("dev", "staging", "prod", "archived")
ALLOWED: dict[str | None, tuple[str, ...]] = {
    None: ("dev", "archived"),
    "dev": ("staging", "archived"),
    "staging": ("prod", "archived"),
    "prod": ("archived",),
    "archived": (),
}
logger = logging.getLogger(__name__)

MODEL_PERMISSIONS = "setting tags and aliases needs EDIT on the model, deleting an alias MANAGE"
"""What a denied registry request needs (MLflow's basic-auth app): the fix of its message."""


@dataclass(frozen=True)
class Move:
    """One step of a version's lifecycle, as recorded in its history tag."""

    model: str
    version: str
    from_state: str | None
    to_state: str
    at: str
    by: str
    comment: str
    flow_run_id: str | None

    def to_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        return {
            "from": entry.pop("from_state"),
            "to": entry.pop("to_state"),
            **{k: entry[k] for k in ("at", "by", "comment", "flow_run_id")},
        }


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


def check_move(model: str, version: str, to: str, client: MlflowClient | None = None) -> str | None:
    """The version's current state, if `to` is a legal next state; else a LifecycleError saying why."""
    _known_state(to)
    return _check_move(connect(client), model, str(version), to)


def _check_move(tracking: Tracking, model: str, version: str, to: str) -> str | None:
    _known_state(to)
    current = model_version(tracking, model, version).tags.get(LIFECYCLE)
    if to not in ALLOWED[current]:
        allowed = ", ".join(ALLOWED[current]) or "nothing"
        raise LifecycleError(
            f"{model} version {version} is {current or 'new'}: it may move to {allowed}, not to {to} "
            "(the path is new → dev → staging → prod, and any state → archived)"
        )
    return current


def move(
    model: str,
    version: str,
    to: str,
    by: str,
    comment: str = "",
    *,
    approved: bool = False,
    flow_run_id: str | None = None,
    serialize: Serializer | None = None,
    client: MlflowClient | None = None,
) -> list[Move]:
    """Move a version to `to`; returns every move made (a prod promotion also archives the old prod).

    A move that died half way (a killed process, a lost server) is finished first, from its
    history entry (`_settle`); a version already in `to` is left as it is and `[]` returned, so
    retrying a move that died is safe.

    Example:
        >>> move("churn", "3", "staging", by="ana", comment="beats v2 on recall")  # doctest: +SKIP
        [Move(model='churn', version='3', from_state='dev', to_state='staging', ...)]
    """
    tracking = connect(client)
    version = str(version)
    with (serialize or unserialized)(model):
        if settled := _settle(tracking, model):
            logger.warning("%s: finished a move that had died half way: %s", model, "; ".join(settled))
        if _version_state(tracking, model, version) == to and _aliases(tracking, model).get(to) == version:
            return []  # already there: a retry of a move that died after its commit point
        current = _check_move(tracking, model, version, to)
        moves = []
        if to == "prod" and (holder := _aliases(tracking, model).get("prod")) not in (None, version):
            moves.append(
                _apply(
                    tracking,
                    Move(
                        model,
                        holder,
                        "prod",
                        "archived",
                        utc_now(),
                        by,
                        f"replaced in prod by version {version}",
                        flow_run_id,
                    ),
                )
            )
        moves.append(_apply(tracking, Move(model, version, current, to, utc_now(), by, comment, flow_run_id), approved))
        if _aliases(tracking, model).get(to) != version:  # compare after write: a concurrent move won
            raise LifecycleError(f"{model}: a concurrent move took alias {to!r}; version {version} was not moved")
    return moves


def history(model: str, client: MlflowClient | None = None) -> list[Move]:
    """Every move of every version of `model`, oldest first."""
    tracking = connect(client)
    _registered(tracking, model)
    with mlflow_errors(tracking, f"the versions of registered model {model!r}"):
        versions = tracking.client.search_model_versions(f"name='{_quoted(model)}'")
    moves = []
    for version in versions:
        for entry in json.loads(version.tags.get(HISTORY, "[]")):
            moves.append(
                Move(
                    model,
                    str(version.version),  # MLflow gives an int here, a str elsewhere
                    entry["from"],
                    entry["to"],
                    entry["at"],
                    entry["by"],
                    entry.get("comment", ""),
                    entry.get("flow_run_id"),
                )
            )
    return sorted(moves, key=lambda m: (m.at, int(m.version)))


def resolve(model: str, alias: str, client: MlflowClient | None = None) -> ModelVersion:
    """The version an alias names: what `models:/<model>@<alias>` loads."""
    _known_state(alias)
    tracking = connect(client)
    if alias not in _registered(tracking, model).aliases:
        raise LifecycleError(f"{model} has no version in {alias}")
    with mlflow_errors(tracking, f"alias {alias!r} of {model!r}", missing=f"{model} has no version in {alias}"):
        return tracking.client.get_model_version_by_alias(model, alias)


def alias_holder(client: MlflowClient | None, model: str, alias: str) -> str | None:
    """The version the alias names, or None."""
    return _aliases(connect(client), model).get(alias)


def aliases(model: str, client: MlflowClient | None = None) -> dict[str, str]:
    """Alias → version for every alias of `model`, in one request."""
    return _aliases(connect(client), model)


def _aliases(tracking: Tracking, model: str) -> dict[str, str]:
    # search_model_versions does not fill aliases, the registered model does
    return {alias: str(version) for alias, version in _registered(tracking, model).aliases.items()}


def model_version(tracking: Tracking, model: str, version: str) -> ModelVersion:
    """One version of a registered model; a LifecycleError says whether the model or the version is missing."""
    try:
        return tracking.client.get_model_version(model, str(version))
    except (MlflowException, requests.RequestException) as exc:
        if getattr(exc, "error_code", None) in NOT_FOUND:
            _registered(tracking, model)  # says so if the model itself is missing
            raise LifecycleError(f"registered model {model!r} has no version {version}") from None
        raise _meaning(tracking, exc, f"{model!r} version {version!r}") from None


def _apply(tracking: Tracking, step: Move, approved: bool = False) -> Move:
    """The history entry first: it is the commit point of a move. Then the lifecycle and approval
    tags and the aliases, which `_settle` can always redo from the history if this process dies
    half way through."""
    client = tracking.client
    record = json.loads(model_version(tracking, step.model, step.version).tags.get(HISTORY, "[]"))
    with mlflow_errors(tracking, f"{step.model!r} version {step.version!r}"):
        client.set_model_version_tag(step.model, step.version, HISTORY, json.dumps([*record, step.to_entry()]))
        client.set_model_version_tag(step.model, step.version, LIFECYCLE, step.to_state)
        if approved:
            client.set_model_version_tag(step.model, step.version, APPROVED_BY, step.by)
            client.set_model_version_tag(step.model, step.version, APPROVED_AT, step.at)
        client.set_registered_model_alias(step.model, step.to_state, step.version)
    if step.from_state and _aliases(tracking, step.model).get(step.from_state) == step.version:
        with mlflow_errors(tracking, f"alias {step.from_state!r} of {step.model!r}"):
            client.delete_registered_model_alias(step.model, step.from_state)
    return step


def _settle(tracking: Tracking, model: str) -> list[str]:
    """Finish any move that died after its history entry: each version's lifecycle tag becomes
    the state its history last entered, and each state's alias names the version that entered
    that state last. Returns what it changed (nothing when every move completed).

    An alias on a version that no move ever touched is left alone: it was set by hand.
    """
    client = tracking.client
    with mlflow_errors(tracking, f"the versions of registered model {model!r}"):
        versions = client.search_model_versions(f"name='{_quoted(model)}'")
    entered: dict[str, tuple[str, str]] = {}  # state -> (when, version) of its newest arrival
    states: dict[str, str] = {}
    changes = []
    for found in versions:
        version, record = str(found.version), json.loads(found.tags.get(HISTORY, "[]"))
        if not record:
            continue
        last = record[-1]
        states[version] = last["to"]
        entered[last["to"]] = max(entered.get(last["to"], ("", "")), (last["at"], version))
        if found.tags.get(LIFECYCLE) != last["to"]:
            with mlflow_errors(tracking, f"{model!r} version {version!r}"):
                client.set_model_version_tag(model, version, LIFECYCLE, last["to"])
            changes.append(f"version {version}: {LIFECYCLE}={last['to']}")
    for alias, holder in _aliases(tracking, model).items():
        if alias in STATES and holder in states and entered.get(alias, ("", ""))[1] != holder:
            with mlflow_errors(tracking, f"alias {alias!r} of {model!r}"):
                client.delete_registered_model_alias(model, alias)
            changes.append(f"alias {alias} removed from version {holder}")
    held = _aliases(tracking, model)
    for state, (_, version) in entered.items():
        if held.get(state) != version:
            with mlflow_errors(tracking, f"alias {state!r} of {model!r}"):
                client.set_registered_model_alias(model, state, version)
            changes.append(f"alias {state} set on version {version}")
    return changes


def _version_state(tracking: Tracking, model: str, version: str) -> str | None:
    return model_version(tracking, model, version).tags.get(LIFECYCLE)


def _known_state(name: str) -> None:
    if name not in STATES:
        raise LifecycleError(f"unknown lifecycle state {name!r}: use one of {', '.join(STATES)}")


def _registered(tracking: Tracking, model: str):
    missing = f"no registered model named {model!r}: check the name, or register it first"
    with mlflow_errors(tracking, f"registered model {model!r}", missing=missing):
        return tracking.client.get_registered_model(model)


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
