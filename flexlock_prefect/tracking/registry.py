"""★ The lifecycle of registered model versions over MLflow aliases (DESIGN.md §6).

States and aliases: `dev`, `staging`, `prod`, `archived`. The truth for every version is its
tag `flexlock.lifecycle`; an alias names the version that most recently entered its state (so
`prod` names the one production version, `archived` the latest archived one). Allowed moves:
new → dev, dev → staging, staging → prod, any → archived. A version that leaves a state takes
that state's alias with it, and promoting a version to prod archives the version that held
prod. Every move appends `{from, to, at, by, comment, flow_run_id, mlflow_user}` to the
version's tag `flexlock.lifecycle_history`. An illegal move, an unknown model, version or state,
or an account that may not delete the aliases the move deletes (`permissions.require_manage`)
changes nothing and says why.

Moves of one model serialise on the lock the caller passes (a Prefect global concurrency limit
keyed by the model name, from `promote.py`); outside it, a compare-after-write check makes a
losing concurrent move fail instead of leaving two versions claiming prod.

A move reads the model once (its aliases, every version's tags: `model_state.read_model`) and
keeps what it read up to date with its own writes; under the model's lock nobody else writes it.

Every call first checks the registry's server with the fast health check of
`tracking.client` (`model_state.connect`: a server that is down is one TrackingError within
seconds, not MLflow's minutes of retries), and MLflow's errors mean what `tracking/errors.py`
says (`model_state.mlflow_errors`): here a missing model or version or a refused value is a
LifecycleError; missing credentials or permissions, an overloaded or unreachable server are a
TrackingError.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.lock import utc_now
from flexlock_prefect.tracking.client import Tracking
from flexlock_prefect.tracking.lifecycle import STATES, lifecycle_record, settled_aliases, state_of, with_lifecycle
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.model_state import (
    ModelState,
    connect,
    mlflow_errors,
    model_aliases,
    model_version,
    read_model,
    registered_model,
)
from flexlock_prefect.tracking.permissions import mlflow_account, require_manage
from flexlock_prefect.tracking.tags import APPROVED_AT, APPROVED_BY, HISTORY, LIFECYCLE

ALLOWED: dict[str | None, tuple[str, ...]] = {
    None: ("dev", "archived"),
    "dev": ("staging", "archived"),
    "staging": ("prod", "archived"),
    "prod": ("archived",),
    "archived": (),
}
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """One step of a version's lifecycle, as recorded in its history tag: `by` is the person who
    decided it (the reviewer), `mlflow_user` the MLflow account that wrote it (None without a
    username, and for moves recorded before accounts were)."""

    model: str
    version: str
    from_state: str | None
    to_state: str
    at: str
    by: str
    comment: str
    flow_run_id: str | None
    mlflow_user: str | None = None

    @property
    def made_by(self) -> str:
        """Who, for people to read: `bo (MLflow account promoter)`, or `bo` without an account."""
        return self.by + (f" (MLflow account {self.mlflow_user})" if self.mlflow_user else "")

    def to_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        return {
            "from": entry.pop("from_state"),
            "to": entry.pop("to_state"),
            **{k: entry[k] for k in ("at", "by", "comment", "flow_run_id", "mlflow_user")},
        }


def check_move(
    model: str, version: str, to: str, client: MlflowClient | None = None, *, writes: bool = False
) -> str | None:
    """The version's current state, if `to` is a legal next state; else a LifecycleError saying why.

    `writes`: this process will make the move itself (the promote flow, as its account), so its
    MLflow account must also be allowed to delete the aliases the move deletes (else one
    TrackingError): a reviewer is then never asked to approve a move that cannot be made. A
    person's check before starting a deployment leaves it False: the deployment's account moves.
    """
    _known_state(to)
    tracking, version = connect(client), str(version)
    if not writes:
        return _legal(model, version, model_version(tracking, model, version).tags.get(LIFECYCLE), to)
    current, _ = _checked(tracking, read_model(tracking, model), version, to)
    return _legal(model, version, current, to)  # a version already in `to` is no move to approve


def _checked(tracking: Tracking, found: ModelState, version: str, to: str) -> tuple[str | None, bool]:
    """The version's state once any move that died half way is finished, and whether it is
    already in `to` with its alias (a retry of a move that died after its commit point); before
    any write, a LifecycleError for an illegal move and a TrackingError for an account that may
    not delete the aliases the move (with that finishing) deletes."""
    model = found.name
    current, settled = _settled(tracking, found, version)
    done = current == to and settled.get(to) == version
    if not done:
        _legal(model, version, current, to)
    deletes = [alias for alias in found.aliases if alias not in settled]  # finishing a move that died
    if not done and current and settled.get(current) == version:
        deletes.append(current)  # the alias of the state the version leaves
    if deletes:
        with mlflow_errors(tracking, f"the permissions of this user on {model!r}"):
            require_manage(tracking.uri, model, f"move {model} version {version} to {to}", deletes)
    return current, done


def _legal(model: str, version: str, current: str | None, to: str) -> str | None:
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
    retrying a move that died is safe. Before its first write a move that deletes an alias makes
    sure the MLflow account may (`permissions.require_manage`): a 403 half way would leave the
    move half applied. Each move records that account beside `by` (`Move.mlflow_user`).

    Example:
        >>> move("churn", "3", "staging", by="ana", comment="beats v2 on recall")  # doctest: +SKIP
        [Move(model='churn', version='3', from_state='dev', to_state='staging', ...)]
    """
    _known_state(to)
    tracking = connect(client)
    version = str(version)
    with (serialize or unserialized)(model) as serialized:
        found = read_model(tracking, model)
        current, done = _checked(tracking, found, version, to)
        if finished := _settle(tracking, found):
            logger.warning("%s: finished a move that had died half way: %s", model, "; ".join(finished))
        if done:
            return []
        account, moves = mlflow_account(), []
        if to == "prod" and (holder := found.aliases.get("prod")) not in (None, version):
            why = f"replaced in prod by version {version}"
            replaced = Move(model, holder, "prod", "archived", utc_now(), by, why, flow_run_id, account)
            moves.append(_apply(tracking, found, replaced, hands_on_alias=True))  # the next step takes prod
        step = Move(model, version, current, to, utc_now(), by, comment, flow_run_id, account)
        moves.append(_apply(tracking, found, step, approved))
        # The one re-read: without a lock that serialises, another move may have taken the alias
        # since this one set it. Under the lock no other move runs, and a hand edit is `audit`'s.
        if not serialized and model_aliases(tracking, model).get(to) != version:
            raise LifecycleError(f"{model}: a concurrent move took alias {to!r}; version {version} was not moved")
    return moves


def history(model: str, client: MlflowClient | None = None) -> list[Move]:
    """Every move of every version of `model`, oldest first."""
    moves = []
    for version, tags in read_model(connect(client), model).tags.items():
        for entry in lifecycle_record(model, version, tags):
            moves.append(
                Move(
                    model,
                    version,
                    entry["from"],
                    entry["to"],
                    entry["at"],
                    entry["by"],
                    entry.get("comment", ""),
                    entry.get("flow_run_id"),
                    entry.get("mlflow_user"),
                )
            )
    return sorted(moves, key=lambda m: (m.at, int(m.version)))


def resolve(model: str, alias: str, client: MlflowClient | None = None) -> ModelVersion:
    """The version an alias names: what `models:/<model>@<alias>` loads."""
    _known_state(alias)
    tracking = connect(client)
    if alias not in registered_model(tracking, model).aliases:
        raise LifecycleError(f"{model} has no version in {alias}")
    with mlflow_errors(tracking, f"alias {alias!r} of {model!r}", missing=f"{model} has no version in {alias}"):
        return tracking.client.get_model_version_by_alias(model, alias)


def alias_holder(client: MlflowClient | None, model: str, alias: str) -> str | None:
    """The version the alias names, or None."""
    return model_aliases(connect(client), model).get(alias)


def aliases(model: str, client: MlflowClient | None = None) -> dict[str, str]:
    """Alias → version for every alias of `model`, in one request."""
    return model_aliases(connect(client), model)


def _apply(
    tracking: Tracking, found: ModelState, step: Move, approved: bool = False, hands_on_alias: bool = False
) -> Move:
    """The history entry first: it is the commit point of a move. Then the lifecycle and approval
    tags and the aliases, which `_settle` can always redo from the history if this process dies
    half way through. The alias of the state left goes too, unless the move `hands_on_alias` to
    the version that enters that state next (prod is then never without a version)."""
    client, tags = tracking.client, found.tags_of(tracking, step.version)
    record = [*lifecycle_record(step.model, step.version, tags), step.to_entry()]
    written = {HISTORY: json.dumps(record), LIFECYCLE: step.to_state}
    if approved:
        written |= {APPROVED_BY: step.by, APPROVED_AT: step.at}
    with mlflow_errors(tracking, f"{step.model!r} version {step.version!r}"):
        for key, value in written.items():  # the history entry first
            client.set_model_version_tag(step.model, step.version, key, value)
            tags[key] = value
        client.set_registered_model_alias(step.model, step.to_state, step.version)
    found.aliases[step.to_state] = step.version
    if step.from_state and not hands_on_alias and found.aliases.get(step.from_state) == step.version:
        with mlflow_errors(tracking, f"alias {step.from_state!r} of {step.model!r}"):
            client.delete_registered_model_alias(step.model, step.from_state)
        del found.aliases[step.from_state]
    described = with_lifecycle(found.descriptions.get(step.version, ""), record)
    with mlflow_errors(tracking, f"{step.model!r} version {step.version!r}"):  # for people only: the tags rule
        client.update_model_version(step.model, step.version, description=described)
    found.descriptions[step.version] = described
    return step


def _records(found: ModelState) -> dict[str, list[dict[str, Any]]]:
    return {version: lifecycle_record(found.name, version, tags) for version, tags in found.tags.items()}


def _settled(tracking: Tracking, found: ModelState, version: str) -> tuple[str | None, dict[str, str]]:
    """The state of `version` and the model's aliases once `_settle` has finished any move that
    died half way: what a move starts from, known before it writes anything."""
    tags = found.tags_of(tracking, version)
    records = _records(found)
    current = state_of(records[version]) if records.get(version) else tags.get(LIFECYCLE)
    return current, settled_aliases(records, found.aliases)


def _settle(tracking: Tracking, found: ModelState) -> list[str]:
    """Finish any move that died after its history entry: each version's lifecycle tag becomes
    the state its history last entered, and the aliases become `lifecycle.settled_aliases`: each
    state's names the version the histories say. Returns what it changed (nothing when every
    move completed).

    An alias on a version that no move ever touched is left alone unless the histories give it
    to another: it was set by hand, and `audit` reports it. An alias the histories give to
    another version is moved, not deleted first: deleting needs more permission than setting.
    """
    client, model = tracking.client, found.name
    records = _records(found)
    states = {version: state_of(record) for version, record in records.items() if record}
    settled = settled_aliases(records, found.aliases)
    changes = []
    for version, state in states.items():
        if found.tags[version].get(LIFECYCLE) != state:
            with mlflow_errors(tracking, f"{model!r} version {version!r}"):
                client.set_model_version_tag(model, version, LIFECYCLE, state)
            found.tags[version][LIFECYCLE] = state
            changes.append(f"version {version}: {LIFECYCLE}={state}")
    for alias, holder in list(found.aliases.items()):
        if alias not in settled:
            with mlflow_errors(tracking, f"alias {alias!r} of {model!r}"):
                client.delete_registered_model_alias(model, alias)
            del found.aliases[alias]
            changes.append(f"alias {alias} removed from version {holder}")
    for state, version in settled.items():
        if found.aliases.get(state) != version:
            with mlflow_errors(tracking, f"alias {state!r} of {model!r}"):
                client.set_registered_model_alias(model, state, version)
            found.aliases[state] = version
            changes.append(f"alias {state} set on version {version}")
    return changes


def _known_state(name: str) -> None:
    if name not in STATES:
        raise LifecycleError(f"unknown lifecycle state {name!r}: use one of {', '.join(STATES)}")
