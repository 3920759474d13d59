"""What differs between the inputs of two runs: config keys, code files, data, environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexlock_prefect.capture.config import flatten, value_text
from flexlock_prefect.capture.git import changed_files
from flexlock_prefect.lock import RunLock, canonical_json


@dataclass(frozen=True)
class Change:
    """One difference; `before`/`after` is None when the item exists on one side only."""

    section: str
    name: str
    before: str | None
    after: str | None
    details: list[str] = field(default_factory=list)


def diff_locks(a: RunLock, b: RunLock) -> list[Change]:
    """Every input difference from `a` to `b`; empty when the runs had the same inputs.

    `save_dir` is left out: two runs always differ there. Code differences list the changed
    files when a repository holding both recorded trees is at hand.

    Example:
        >>> [c.name for c in diff_locks(RunLock.load("runs/a"), RunLock.load("runs/b"))]  # doctest: +SKIP
        ['lr', 'code']
    """
    config_a = {k: v for k, v in flatten(a.config).items() if k != "save_dir"}
    config_b = {k: v for k, v in flatten(b.config).items() if k != "save_dir"}
    changes = _mapping_changes("config", config_a, config_b)
    for name in sorted(a.repos.keys() | b.repos.keys()):
        repo_a, repo_b = a.repos.get(name), b.repos.get(name)
        if repo_a and repo_b and repo_a.tree != repo_b.tree:
            files = changed_files(repo_a, repo_b)
            details = files if files is not None else ["(changed files unknown: no repository holds both trees)"]
            changes.append(Change("code", name, _short(repo_a.tree), _short(repo_b.tree), details))
        elif bool(repo_a) != bool(repo_b):
            changes.append(Change("code", name, repo_a and _short(repo_a.tree), repo_b and _short(repo_b.tree)))
    data_a = {name: f"{d.algorithm}:{d.digest}" for name, d in a.data.items()}
    data_b = {name: f"{d.algorithm}:{d.digest}" for name, d in b.data.items()}
    changes += _mapping_changes("data", data_a, data_b)
    changes += _mapping_changes(
        "env",
        {"python": a.env.python, "platform": a.env.platform},
        {"python": b.env.python, "platform": b.env.platform},
    )
    changes += _mapping_changes("env", _prefixed("packages", a.env.packages), _prefixed("packages", b.env.packages))
    changes += _mapping_changes("env", _prefixed("lockfiles", a.env.lockfiles), _prefixed("lockfiles", b.env.lockfiles))
    return changes


def _mapping_changes(section: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """Keys whose values differ as the fingerprint sees them: by their JSON, so 10 and 10.0 (or
    1 and true) differ, though Python's `==` calls them equal."""
    return [
        Change(section, key, value_text(a[key]) if key in a else None, value_text(b[key]) if key in b else None)
        for key in sorted(a.keys() | b.keys(), key=str)
        if key not in a or key not in b or canonical_json(a[key]) != canonical_json(b[key])
    ]


def _prefixed(prefix: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in mapping.items()}


def _short(sha: str) -> str:
    return sha[:12]
