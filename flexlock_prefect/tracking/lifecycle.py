"""★ What a version's lifecycle history says (DESIGN.md §6): its moves, its state, the alias holders.

The history tag `flexlock.lifecycle_history` is the record; the aliases and the
`flexlock.lifecycle` tags are views of it. Moves (`registry.move`) and the finishing of a move
that died (`registry._settle`) write those views, and `audit` checks them, all from the rules
here, so that what a move leaves is what the audit expects. A version's description shows its
history as a table for people (`with_lifecycle`), never read back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.tracking.tags import HISTORY

STATES = ("dev", "staging", "prod", "archived")
NEEDS_APPROVAL = ("staging", "prod")
"""The states no version may enter without a person's approval: the promote flow never skips it
there, and `audit` reports a holder without one."""

Record = list[dict[str, Any]]
"""A version's history: its moves `{from, to, at, by, comment, flow_run_id, mlflow_user}`, oldest first
(`mlflow_user`, the MLflow account that wrote the move, is missing from moves recorded before it was)."""


def lifecycle_record(model: str, version: str, tags: Mapping[str, str]) -> Record:
    """A version's history tag as its moves (`[]` for a version never moved).

    A tag that is no list of moves (edited by hand, truncated) is a LifecycleError naming the
    version, never a JSON error half way through a move: nothing can be said of its state.

    Example:
        >>> lifecycle_record("churn", "3", {HISTORY: '[{"from": null, "to": "dev", "at": "t", "by": "ana"}]'})
        [{'from': None, 'to': 'dev', 'at': 't', 'by': 'ana'}]
        >>> lifecycle_record("churn", "3", {HISTORY: "[{"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        flexlock_prefect.exceptions.LifecycleError: churn version 3: its tag flexlock.lifecycle_history is not JSON ...
    """
    text = tags.get(HISTORY)
    if text is None:
        return []
    where = f"{model} version {version}: its tag {HISTORY}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LifecycleError(f"{where} is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(record, list) or not all(_is_move(entry) for entry in record):
        raise LifecycleError(f"{where} is not a list of moves {{from, to, at, by, …}} between {', '.join(STATES)}")
    return record


def _is_move(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("to") in STATES
        and "from" in entry
        and (entry["from"] is None or entry["from"] in STATES)
        and isinstance(entry.get("at"), str)
        and isinstance(entry.get("by"), str)
    )


def state_of(record: Sequence[Mapping[str, Any]]) -> str | None:
    """The state the history last entered; None for a version never moved (new)."""
    return record[-1]["to"] if record else None


def recorded_holders(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, str]:
    """State → the version its alias names by the histories (version → its record): the version
    that entered the state last, while it is still there.

    That is what moves leave: the version entering a state takes its alias, and a version that
    leaves takes its state's alias with it. So a version left in dev when a newer dev version
    moved on names no alias, and `archived` names the version archived last.

    Example:
        >>> def moved(*steps):
        ...     return [{"from": None, "to": to, "at": at, "by": "ana"} for to, at in steps]
        >>> recorded_holders({"1": moved(("dev", "t1")), "2": moved(("dev", "t2"), ("staging", "t3"))})
        {'staging': '2'}
    """
    latest: dict[str, tuple[str, int, str]] = {}  # state -> (at, version number, version) of its newest arrival
    for version, record in records.items():
        for entry in record:
            arrival = (entry["at"], int(version), version)
            latest[entry["to"]] = max(latest.get(entry["to"], arrival), arrival)
    return {state: version for state, (_, _, version) in latest.items() if state_of(records[version]) == state}


def settled_aliases(records: Mapping[str, Sequence[Mapping[str, Any]]], aliases: Mapping[str, str]) -> dict[str, str]:
    """Alias → version once every move that died half way is finished (`registry._settle`):
    each state's alias on the version the histories give it to (`recorded_holders`), a lifecycle
    alias on a moved version that the histories give to nobody gone. Any other alias stays: one
    set by hand on a version never moved is `audit`'s to report.

    A move compares this with the aliases it read to know, before its first write, which aliases
    it will delete (deleting needs more permission than setting).

    Example:
        >>> dev = [{"from": None, "to": "dev", "at": "t1", "by": "ana"}]
        >>> staging = [*dev, {"from": "dev", "to": "staging", "at": "t2", "by": "ana"}]
        >>> settled_aliases({"1": staging}, {"dev": "1", "staging": "1"})  # died before dropping dev
        {'staging': '1'}
    """
    moved = {version for version, record in records.items() if record}
    kept = {alias: version for alias, version in aliases.items() if alias not in STATES or version not in moved}
    return kept | recorded_holders(records)


LIFECYCLE_HEADING = "#### Lifecycle (flexlock)"
"""Starts the part of a version's description that flexlock writes; what comes before is the user's."""
LIFECYCLE_ROWS = 50
"""Moves shown in a version's description at most (MLflow limits a description's length)."""


def _cell(text: object) -> str:
    """One line of a markdown table cell."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def with_lifecycle(description: str, record: list[dict[str, Any]]) -> str:
    """`description` with its lifecycle part rewritten as a table of `record` (the history tag),
    newest first, so that the version's page in MLflow reads as a history, not as JSON.

    Example:
        >>> print(with_lifecycle("Trained on May data.", [{"from": None, "to": "dev", "at": "2026-12-01T10:00:00Z",
        ...       "by": "ana", "comment": "", "flow_run_id": None}]))
        Trained on May data.
        <BLANKLINE>
        #### Lifecycle (flexlock)
        <BLANKLINE>
        | when (UTC) | move | by | comment |
        |---|---|---|---|
        | 2026-12-01T10:00:00Z | new → dev | ana |  |
    """
    own = description.split(LIFECYCLE_HEADING, 1)[0].rstrip()
    rows = [
        f"| {e['at']} | {e['from'] or 'new'} → {e['to']} | {_cell(e['by'])} | {_cell(e['comment'])} |"
        for e in reversed(record[-LIFECYCLE_ROWS:])
    ]
    if len(record) > LIFECYCLE_ROWS:
        rows.append(f"| … | {len(record) - LIFECYCLE_ROWS} earlier moves in the tag `{HISTORY}` | | |")
    table = [LIFECYCLE_HEADING, "", "| when (UTC) | move | by | comment |", "|---|---|---|---|", *rows]
    return "\n\n".join(part for part in (own, "\n".join(table)) if part)
