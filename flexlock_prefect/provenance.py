"""Where a run came from, as its run.lock says: the code and how to check it out again, the data,
the lockfiles, and the upstream runs whose save_dirs hold its data, traced recursively.

The record side of `flexlock-prefect trace` (`tracking/trace.py` adds the registry and MLflow).
An upstream that cannot be read, or that closes a cycle, is a problem of its node, never an
exception: lineage is followed as far as it goes. Knows neither Prefect nor MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flexlock_prefect import storage
from flexlock_prefect.capture.config import value_text
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.lock import Lineage, RepoState, RunLock
from flexlock_prefect.verify import verify_lock

CONFIG_HIGHLIGHTS = 10
"""Config values a record shows at most (the whole config is in the run.lock: `show`)."""


@dataclass(frozen=True)
class Code:
    """A repo as the run.lock records it; `restore` is the git command, run in the repo at
    `path`, that checks out its exact code again: the snapshot of the working state when it was
    dirty, else the commit."""

    name: str
    commit: str | None
    dirty: bool
    snapshot_ref: str | None
    branch: str | None
    remote: str | None
    path: str
    restore: str | None


@dataclass(frozen=True)
class Data:
    name: str
    uri: str
    digest: str  # algorithm:digest
    size: int
    files: int


@dataclass(frozen=True)
class Upstream:
    """A run whose save_dir holds the data input `input` (run.lock `lineage`), traced in turn.

    `record` is None when the upstream cannot be read (its `problems` say why), when it closes
    a cycle, or when it is `repeated`: traced earlier in the same trace, and expanded only there."""

    input: str
    save_dir: str
    fingerprint: str  # as the downstream run recorded it
    record: Record | None
    problems: tuple[str, ...] = ()
    repeated: bool = False


@dataclass(frozen=True)
class Record:
    """What a run.lock says, in the parts that answer "what produced this"."""

    save_dir: str
    digest: str
    fingerprint: str
    created_at: str
    result: str | None  # completed | failed, None while running
    flow_run_id: str | None
    config: dict[str, str]
    code: tuple[Code, ...] = ()
    data: tuple[Data, ...] = ()
    lockfiles: dict[str, str] = field(default_factory=dict)
    upstream: tuple[Upstream, ...] = ()


@dataclass(frozen=True)
class Check:
    """One item of verification: a data input, a repo's code objects, the run.lock's digest."""

    what: str
    ok: bool
    detail: str


def lock_record(lock: RunLock, first: Sequence[str] = ()) -> Record:
    """The record of `lock`, its upstream runs traced; the config keys in `first` lead its
    highlights (the trace passes the seed-tag keys, `project`, `model_name`, …).

    Example:
        >>> record = lock_record(RunLock.load("runs/b"))  # doctest: +SKIP
        >>> [(up.input, up.save_dir) for up in record.upstream]  # doctest: +SKIP
        [('features', 'file:///runs/a')]
    """
    return _Lineage(tuple(first)).record(lock, ())


def load_lock(save_dir: str) -> tuple[RunLock | None, str | None]:
    """The run.lock of `save_dir`, or None and why: the save_dir is gone, or the file is
    missing or unreadable."""
    try:
        return RunLock.load(save_dir), None
    except FlexlockError as exc:
        return None, f"save_dir {save_dir} is gone" if _gone(save_dir) else str(exc)


def _gone(save_dir: str) -> bool:
    try:
        return not storage.exists(save_dir)
    except FlexlockError:
        return False  # cannot tell: the run.lock's own error says more


@dataclass
class _Lineage:
    """One walk up the lineage: each save_dir is expanded once (`seen`)."""

    first: tuple[str, ...]
    seen: set[str] = field(default_factory=set)

    def record(self, lock: RunLock, below: tuple[str, ...]) -> Record:
        """`below`: the save_dirs downstream of this one, where an upstream would close a cycle."""
        self.seen.add(lock.logical_run_id)
        path = (*below, lock.logical_run_id)
        return Record(
            save_dir=lock.logical_run_id,
            digest=lock.digest,
            fingerprint=lock.fingerprint,
            created_at=lock.created_at,
            result=lock.result.status if lock.result else None,
            flow_run_id=lock.prefect.flow_run_id if lock.prefect else None,
            config=config_highlights(lock.config, self.first),
            code=tuple(_code(name, repo) for name, repo in lock.repos.items()),
            data=tuple(Data(n, d.uri, f"{d.algorithm}:{d.digest}", d.size, d.files) for n, d in lock.data.items()),
            lockfiles=dict(lock.env.lockfiles),
            upstream=tuple(self.upstream(name, link, path) for name, link in lock.lineage.items()),
        )

    def upstream(self, name: str, link: Lineage, below: tuple[str, ...]) -> Upstream:
        save_dir = link.logical_run_id
        if save_dir in below:
            return Upstream(
                name, save_dir, link.fingerprint, None, (f"a lineage cycle: {save_dir} is its own upstream",)
            )
        if save_dir in self.seen:
            return Upstream(name, save_dir, link.fingerprint, None, repeated=True)
        lock, problem = load_lock(save_dir)
        if lock is None:
            return Upstream(name, save_dir, link.fingerprint, None, (problem or "",))
        changed = lock.fingerprint != link.fingerprint
        again = (f"recorded again since: fingerprint {link.fingerprint} is now {lock.fingerprint}",) if changed else ()
        return Upstream(name, save_dir, link.fingerprint, self.record(lock, below), again)


def _code(name: str, repo: RepoState) -> Code:
    ref = repo.snapshot_ref or repo.commit
    restore = f"git checkout {ref}" if ref else None
    return Code(name, repo.commit, repo.dirty, repo.snapshot_ref, repo.branch, repo.remote, repo.path, restore)


def config_highlights(config: Mapping[str, Any], first: Sequence[str] = ()) -> dict[str, str]:
    """A few config values that tell runs apart: those of the keys in `first` it has, then its
    other top-level scalars in file order, `CONFIG_HIGHLIGHTS` at most. `save_dir` is left out
    (a trace shows it apart), and so are nested sections and lists (`show` has them).

    Example:
        >>> config_highlights({"lr": 0.1, "model": {"C": 1}, "save_dir": "runs/a", "project": "churn"}, ["project"])
        {'project': 'churn', 'lr': '0.1'}
    """
    scalar = {k: v for k, v in config.items() if k != "save_dir" and not isinstance(v, Mapping | list)}
    keys = [k for k in first if k in scalar] + [k for k in scalar if k not in first]
    return {key: value_text(scalar[key]) for key in keys[:CONFIG_HIGHLIGHTS]}


def checks(lock: RunLock | None, expected_digest: str | None = None) -> tuple[Check, ...]:
    """`verify_lock` item by item: each data input, each repo's code objects and, given the
    digest MLflow recorded, the run.lock itself. Without a readable record nothing can pass:
    one failed check says so."""
    if lock is None:
        return (Check("run.lock", False, "no readable run.lock to verify: see the problems"),)
    mismatches = verify_lock(lock, expected_digest=expected_digest)
    items = [f"data {name}" for name in lock.data] + [f"code {name}" for name in lock.repos]
    items += ["run.lock"] if expected_digest else []
    items += [m.what for m in mismatches]  # anything verify_lock may add one day
    found = []
    for item in dict.fromkeys(items):
        failed = [m.detail for m in mismatches if m.what == item]
        found.append(Check(item, not failed, "; ".join(failed) or "matches"))
    return tuple(found)
