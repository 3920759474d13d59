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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.lock import utc_now
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


def check_move(model: str, version: str, to: str, client: MlflowClient | None = None) -> str | None:
    """The version's current state, if `to` is a legal next state; else a LifecycleError saying why."""
    client = client or MlflowClient()
    if to not in STATES:
        raise LifecycleError(f"unknown lifecycle state {to!r}: use one of {', '.join(STATES)}")
    current = _version(client, model, version).tags.get(LIFECYCLE)
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

    Example:
        >>> move("churn", "3", "staging", by="ana", comment="beats v2 on recall")  # doctest: +SKIP
        [Move(model='churn', version='3', from_state='dev', to_state='staging', ...)]
    """
    client = client or MlflowClient()
    version = str(version)
    with (serialize or unserialized)(model):
        current = check_move(model, version, to, client)
        moves = []
        if to == "prod" and (holder := alias_holder(client, model, "prod")) not in (None, version):
            moves.append(
                _apply(
                    client,
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
        moves.append(_apply(client, Move(model, version, current, to, utc_now(), by, comment, flow_run_id), approved))
        if alias_holder(client, model, to) != version:  # compare after write: a concurrent move won
            raise LifecycleError(f"{model}: a concurrent move took alias {to!r}; version {version} was not moved")
    return moves


def history(model: str, client: MlflowClient | None = None) -> list[Move]:
    """Every move of every version of `model`, oldest first."""
    client = client or MlflowClient()
    _registered(client, model)
    moves = []
    for version in client.search_model_versions(f"name='{_quoted(model)}'"):
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
    client = client or MlflowClient()
    if alias not in STATES:
        raise LifecycleError(f"unknown lifecycle state {alias!r}: use one of {', '.join(STATES)}")
    _registered(client, model)
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        raise LifecycleError(f"{model} has no version in {alias}") from exc


def _apply(client: MlflowClient, step: Move, approved: bool = False) -> Move:
    """Tags first (the truth), then the aliases: the new state's, and the old state's removal."""
    record = json.loads(_version(client, step.model, step.version).tags.get(HISTORY, "[]"))
    client.set_model_version_tag(step.model, step.version, LIFECYCLE, step.to_state)
    client.set_model_version_tag(step.model, step.version, HISTORY, json.dumps([*record, step.to_entry()]))
    if approved:
        client.set_model_version_tag(step.model, step.version, APPROVED_BY, step.by)
        client.set_model_version_tag(step.model, step.version, APPROVED_AT, step.at)
    client.set_registered_model_alias(step.model, step.to_state, step.version)
    if step.from_state and alias_holder(client, step.model, step.from_state) == step.version:
        client.delete_registered_model_alias(step.model, step.from_state)
    return step


def alias_holder(client: MlflowClient, model: str, alias: str) -> str | None:
    aliases = _registered(client, model).aliases  # search_model_versions does not fill aliases
    return str(aliases[alias]) if alias in aliases else None


def _registered(client: MlflowClient, model: str):
    try:
        return client.get_registered_model(model)
    except MlflowException as exc:
        raise LifecycleError(f"no registered model named {model!r}: check the name, or register it first") from exc


def _version(client: MlflowClient, model: str, version: str) -> ModelVersion:
    _registered(client, model)
    try:
        return client.get_model_version(model, str(version))
    except MlflowException as exc:
        raise LifecycleError(f"registered model {model!r} has no version {version}") from exc


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
