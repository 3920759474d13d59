"""★ `audit`: do a registered model's aliases, lifecycle tags and approvals agree with its
lifecycle history (DESIGN.md §6)? `repair=True` realigns what the history decides.

The history tag of each version (`flexlock.lifecycle_history`) is the record; the aliases, the
`flexlock.lifecycle` tags and `flexlock.approved_by`/`approved_at` are views of it that moves
keep in step. Someone with EDIT on the model can still set an alias by hand
(`MlflowClient.set_registered_model_alias(name, "prod", v)`), around the approval flow: the
audit notices. Each `Finding` has a kind (★, automations filter on it):

- `alias-misplaced`: a lifecycle alias names a version the histories do not give it to;
- `alias-missing`: no version holds an alias the histories give to one (a state's alias names
  the version that entered it last, while it is still there: `lifecycle.recorded_holders`);
- `lifecycle-tag`: a version's `flexlock.lifecycle` is not the state its history last entered;
- `shared-state`: two versions in prod, by their histories or tags. Only prod is exclusive: a
  promotion archives the version it replaces, while several versions may wait in dev or
  staging (their alias names the newest);
- `unapproved`: a version in staging or prod, by alias, tag or history, whose move into that
  state carries no approval (`move(..., approved=True)` writes that move's `by` and `at` as
  `flexlock.approved_by`/`approved_at`);
- `approval-unrecorded`: approval tags that name no move of the version's history;
- `unreadable-history`: a history tag that is no list of moves; nothing else of that version,
  nor an alias on it, is then checked or repaired.

Repair writes aliases and lifecycle tags only: each tag becomes its history's state, each alias
goes to the version the histories give it to, but an alias of staging or prod only to a
version whose move into that state was approved. It never writes a history or an approval:
what it cannot align is returned unresolved, and a second audit finds only that.

The model is read once (its aliases and every version's tags, as a move reads it), under the
lock the caller passes (`serialize`, like `move`): a read in the middle of a move would see it
half done. Errors mean what they mean for moves (`model_state.mlflow_errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlflow import MlflowClient

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.tracking.client import Tracking
from flexlock_prefect.tracking.lifecycle import (
    NEEDS_APPROVAL,
    STATES,
    Record,
    lifecycle_record,
    recorded_holders,
    state_of,
)
from flexlock_prefect.tracking.locking import Serializer, unserialized
from flexlock_prefect.tracking.model_state import ModelState, connect, mlflow_errors, read_model
from flexlock_prefect.tracking.tags import APPROVED_AT, APPROVED_BY, HISTORY, LIFECYCLE

ALIAS_MISPLACED = "alias-misplaced"
ALIAS_MISSING = "alias-missing"
LIFECYCLE_TAG = "lifecycle-tag"
SHARED_STATE = "shared-state"
UNAPPROVED = "unapproved"
APPROVAL_UNRECORDED = "approval-unrecorded"
UNREADABLE_HISTORY = "unreadable-history"

AGREES = "every alias, lifecycle tag and approval agrees with the lifecycle history"
"""What a clean audit says."""
EXCLUSIVE = ("prod",)
"""The states one version at most may be in: a promotion to prod archives the one it replaces."""
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """One disagreement between a model's lifecycle record and its views.

    `state` is the alias or lifecycle state concerned (None for a history that cannot be read);
    `message` is one line saying what is wrong and what the history says; `repaired` is set on
    what `audit(..., repair=True)` realigned.
    """

    kind: str
    model: str
    version: str
    state: str | None
    message: str
    repaired: bool = False

    @property
    def key(self) -> tuple[str, str, str | None]:
        """What the finding is about, whatever its message: how a repair tells what it fixed."""
        return self.kind, self.version, self.state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(
    model: str,
    client: MlflowClient | None = None,
    repair: bool = False,
    *,
    serialize: Serializer | None = None,
) -> list[Finding]:
    """What disagrees with `model`'s lifecycle history (`[]` when all agrees); with `repair`,
    realign aliases and lifecycle tags first and return every finding, `repaired` or not.

    Example:
        >>> audit("churn")  # doctest: +SKIP
        [Finding(kind='alias-misplaced', model='churn', version='2', state='prod', message='alias prod names ...')]
        >>> [f for f in audit("churn", repair=True, serialize=model_lock) if not f.repaired]  # doctest: +SKIP
        []
    """
    tracking = connect(client)
    with (serialize or unserialized)(model):
        found = read_model(tracking, model)
        for version in list(found.aliases.values()):
            found.tags_of(tracking, version)  # an alias on a version the search did not list
        findings = _View(found).findings()
        if not repair or not findings:
            return findings
        for change in _repair(tracking, found):
            logger.info("%s: %s", model, change)
        remaining = {finding.key: finding for finding in _View(found).findings()}
    known = {finding.key for finding in findings}
    outcome = [remaining.get(finding.key, replace(finding, repaired=True)) for finding in findings]
    return outcome + [finding for key, finding in remaining.items() if key not in known]


def managed_models(client: MlflowClient | None = None) -> list[str]:
    """Every registered model with a version that carries a flexlock lifecycle tag (history or
    state): the models flexlock's moves manage, which `registry_audit` audits by default."""
    tracking = connect(client)
    names: set[str] = set()
    for key in (HISTORY, LIFECYCLE):
        token = None
        while True:
            with mlflow_errors(tracking, "the registered model versions"):
                page = tracking.client.search_model_versions(f"tags.`{key}` LIKE '%'", page_token=token)
            names |= {version.name for version in page}
            if not (token := page.token):
                break
    return sorted(names)


class _View:
    """What one read of a model says, and what disagrees in it."""

    def __init__(self, found: ModelState) -> None:
        self.found = found
        self.records: dict[str, Record] = {}
        self.unreadable: dict[str, str] = {}
        for version, tags in found.tags.items():
            try:
                self.records[version] = lifecycle_record(found.name, version, tags)
            except LifecycleError as exc:
                self.unreadable[version] = str(exc)
        self.holders = recorded_holders(self.records)

    def findings(self) -> list[Finding]:
        return [
            *self._unreadable(),
            *self._lifecycle_tags(),
            *self._aliases(),
            *self._shared(),
            *self._approvals(),
        ]

    def finding(self, kind: str, version: str, state: str | None, message: str) -> Finding:
        return Finding(kind, self.found.name, version, state, message)

    def blessed(self, version: str, state: str) -> bool:
        """Whether repair may give `state`'s alias to `version`: no approval is needed, or its
        move into `state` was approved."""
        return state not in NEEDS_APPROVAL or _approved(self.records[version], self.found.tags[version], state)

    def _unreadable(self) -> list[Finding]:
        return [
            self.finding(
                UNREADABLE_HISTORY,
                version,
                None,
                f"{why}: its state is unknown, so nothing else of version {version} (nor an alias on it) is "
                "checked or repaired; fix the tag by hand",
            )
            for version, why in self.unreadable.items()
        ]

    def _lifecycle_tags(self) -> list[Finding]:
        return [
            self.finding(
                LIFECYCLE_TAG,
                version,
                state_of(record),
                f"version {version}: its tag {LIFECYCLE} says {tag or 'nothing'}, but its history {_ends(record)}",
            )
            for version, record in self.records.items()
            if (tag := self.found.tags[version].get(LIFECYCLE)) != state_of(record)
        ]

    def _aliases(self) -> list[Finding]:
        findings = []
        for state in STATES:
            actual, holder = self.found.aliases.get(state), self.holders.get(state)
            if actual == holder or actual in self.unreadable:
                continue
            says = f"by the histories no version is in {state}"
            if holder:
                says = f"by the histories it names version {holder} ({_arrival(self.records[holder], state)})"
                if not self.blessed(holder, state):
                    says += ", whose move into it was not approved: repair will not give it the alias"
            if actual is None:
                findings.append(self.finding(ALIAS_MISSING, holder, state, f"alias {state} names no version; {says}"))
            else:
                whose = f"version {actual}, whose history {_ends(self.records[actual])}"
                findings.append(self.finding(ALIAS_MISPLACED, actual, state, f"alias {state} names {whose}; {says}"))
        return findings

    def ways_in(self, version: str, state: str, by_alias: bool = True) -> list[str]:
        """How `version` is in `state`: by the alias, its lifecycle tag, its history."""
        held = (
            ("alias", by_alias and self.found.aliases.get(state) == version),
            (f"tag {LIFECYCLE}", self.found.tags[version].get(LIFECYCLE) == state),
            ("history", state_of(self.records[version]) == state),
        )
        return [way for way, holds in held if holds]

    def _shared(self) -> list[Finding]:
        """Versions in an exclusive state by tag or history (an alias names one version anyway)."""
        findings = []
        for state in EXCLUSIVE:
            members = {v: ways for v in sorted(self.records, key=int) if (ways := self.ways_in(v, state, False))}
            if len(members) < 2:
                continue
            holder = self.holders.get(state)
            says = f"by the histories version {holder} is" if holder else "by the histories none is"
            for version, ways in members.items():
                if version == holder:
                    continue
                others = ", ".join(v for v in members if v != version)
                message = (
                    f"version {version} is in {state} by its {_listed(ways)}, as is version {others}: "
                    f"one version at most may be in {state}, and {says}"
                )
                findings.append(self.finding(SHARED_STATE, version, state, message))
        return findings

    def _approvals(self) -> list[Finding]:
        findings = []
        for version, record in self.records.items():
            tags = self.found.tags[version]
            for state in NEEDS_APPROVAL:
                ways = self.ways_in(version, state)
                if not ways or _approved(record, tags, state):
                    continue
                entered = _entry(record, state)
                why = (
                    f"its move into {state} ({_when(entered)}) was not approved ({APPROVED_BY}/{APPROVED_AT} "
                    "do not name it)"
                    if entered
                    else f"its history records no move into {state}"
                )
                message = f"version {version} is in {state} by its {_listed(ways)} with no recorded approval: {why}"
                findings.append(self.finding(UNAPPROVED, version, state, message))
            if (APPROVED_BY in tags or APPROVED_AT in tags) and not any(_signed(entry, tags) for entry in record):
                message = (
                    f"version {version}: its approval tags name no move of its history ({APPROVED_BY}="
                    f"{tags.get(APPROVED_BY)!r}, {APPROVED_AT}={tags.get(APPROVED_AT)!r})"
                )
                findings.append(self.finding(APPROVAL_UNRECORDED, version, tags.get(LIFECYCLE), message))
        return findings


def _repair(tracking: Tracking, found: ModelState) -> list[str]:
    """Realign lifecycle tags and aliases with the histories, writing through to `found`;
    returns what changed. Histories and approval tags are never written."""
    view, client, model = _View(found), tracking.client, found.name
    changes = []
    for version, record in view.records.items():
        tags, state = found.tags[version], state_of(record)
        if tags.get(LIFECYCLE) == state:
            continue
        with mlflow_errors(tracking, f"{model!r} version {version!r}"):
            if state is None:
                client.delete_model_version_tag(model, version, LIFECYCLE)
                del tags[LIFECYCLE]
            else:
                client.set_model_version_tag(model, version, LIFECYCLE, state)
                tags[LIFECYCLE] = state
        changes.append(f"version {version}: {LIFECYCLE} {state or 'removed'}")
    for state in STATES:
        actual, holder = found.aliases.get(state), view.holders.get(state)
        if actual == holder or actual in view.unreadable:
            continue
        with mlflow_errors(tracking, f"alias {state!r} of {model!r}"):
            if holder and view.blessed(holder, state):
                client.set_registered_model_alias(model, state, holder)
                found.aliases[state] = holder
                changes.append(f"alias {state} set on version {holder}")
            elif actual is not None:
                client.delete_registered_model_alias(model, state)
                del found.aliases[state]
                changes.append(f"alias {state} removed from version {actual}")
    return changes


def _entry(record: Record, state: str) -> Mapping[str, Any] | None:
    """The version's move into `state` (a version enters each state once at most)."""
    return next((entry for entry in reversed(record) if entry["to"] == state), None)


def _signed(entry: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    """Whether the approval tags name this move (an approved move writes its own `by` and `at`)."""
    return (entry["by"], entry["at"]) == (tags.get(APPROVED_BY), tags.get(APPROVED_AT))


def _approved(record: Record, tags: Mapping[str, str], state: str) -> bool:
    entered = _entry(record, state)
    return entered is not None and _signed(entered, tags)


def _listed(ways: list[str]) -> str:
    return " and ".join(", ".join(ways).rsplit(", ", 1))


def _when(entry: Mapping[str, Any]) -> str:
    return f"{entry['at']} by {entry['by']}"


def _arrival(record: Record, state: str) -> str:
    entered = _entry(record, state)
    return f"in {state} since {_when(entered)}" if entered else f"never in {state}"


def _ends(record: Record) -> str:
    return f"ends in {record[-1]['to']} ({_when(record[-1])})" if record else "records no move (new)"
