"""Garbage collection of code snapshots: the refs under refs/flexlock/snapshots/ that no run.lock needs.

Capture keeps a dirty working state reachable as a commit under `refs/flexlock/snapshots/<tree>`
and records that ref in run.lock; nothing else ever removes one, so they pile up as runs are
deleted. A snapshot is kept while any run.lock under the given roots records its ref name or its
tree, in any of its repos: the recorded `path` is where the repo was at capture time, and a moved
repo or a clone elsewhere holds the same snapshots, so matching by path could drop one a run
needs. Only refs under that namespace are ever deleted, with their expected commit, in one
transaction; every git command runs with `GIT_OPTIONAL_LOCKS=0` (see `capture/git.py`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import git

from flexlock_prefect.capture.git import SNAPSHOT_REF_PREFIX, open_repo
from flexlock_prefect.exceptions import GitCaptureError, RunLockError
from flexlock_prefect.lock import RunLock, find_save_dirs


@dataclass(frozen=True)
class Snapshot:
    """One snapshot ref of a repository, the commit it holds and when that commit was made."""

    repo: str
    ref: str
    commit: str
    tree: str
    committed_at: datetime

    def age_days(self, now: datetime) -> float:
        """Days since the snapshot commit was made, measured from `now` so one listing agrees."""
        return (now - self.committed_at).total_seconds() / 86400


@dataclass(frozen=True)
class SnapshotGc:
    """What `gc_snapshots` did: the snapshots it removed (or, in a dry run, would remove) and why
    it kept the others."""

    removed: tuple[Snapshot, ...]
    referenced: int
    """Kept: a run.lock under the roots records them."""
    young: int
    """Kept: unreferenced, but not older than `older_than_days`."""
    run_locks: int
    dry_run: bool
    checked_at: datetime
    """The moment ages were measured at."""


@dataclass(frozen=True)
class _Recorded:
    """The code states that the run.locks under the roots record, whichever repo they name."""

    refs: frozenset[str]
    trees: frozenset[str]
    run_locks: int

    def references(self, snapshot: Snapshot) -> bool:
        return snapshot.ref in self.refs or snapshot.tree in self.trees


def gc_snapshots(
    repos: Sequence[str | os.PathLike[str]],
    roots: Sequence[str],
    *,
    older_than_days: float | None = None,
    dry_run: bool = False,
) -> SnapshotGc:
    """Delete the snapshot refs of `repos` that no run.lock under `roots` references.

    Every run.lock under the roots (local paths or `s3://` URLs, found as `relog(root=...)` finds
    save_dirs) is read before anything is deleted. One that cannot be read might reference any
    snapshot, so it stops the collection instead of being skipped; so does a root without any
    run.lock, which is more likely a mistyped path than a wish to delete every snapshot. With
    `older_than_days`, snapshots whose commit is no older than that many days are kept as well;
    that also spares a run capturing right now, whose run.lock may not be written yet.

    Raises:
        RunLockError: a run.lock under a root cannot be read, or a root holds none.
        GitCaptureError: a repo path is not a git working tree, or git refused to delete.

    Example:
        >>> result = gc_snapshots(["."], ["runs"], older_than_days=30, dry_run=True)  # doctest: +SKIP
        >>> [s.ref for s in result.removed]  # doctest: +SKIP
        ['refs/flexlock/snapshots/9f1c...']
    """
    opened = _open_repos(repos)
    recorded = _recorded_code(roots)
    now = datetime.now(UTC)
    removed, referenced, young = [], 0, 0
    for repo in opened:
        doomed = []
        for snapshot in _snapshots(repo):
            if recorded.references(snapshot):
                referenced += 1
            elif older_than_days is not None and snapshot.age_days(now) <= older_than_days:
                young += 1
            else:
                doomed.append(snapshot)
        if doomed and not dry_run:
            _delete(repo, doomed)
        removed += doomed
    return SnapshotGc(tuple(removed), referenced, young, recorded.run_locks, dry_run, now)


def _open_repos(paths: Iterable[str | os.PathLike[str]]) -> list[git.Repo]:
    """Each repository once, however many of the paths lie inside it."""
    repos: dict[str, git.Repo] = {}
    for path in paths:
        repo = open_repo(path, optional=True)
        if repo is None:
            raise GitCaptureError(
                f"{Path(path).expanduser().resolve()} is not inside a git repository: "
                "give --repo the working tree whose snapshots to collect"
            )
        repos.setdefault(repo.working_tree_dir, repo)
    return list(repos.values())


def _recorded_code(roots: Sequence[str]) -> _Recorded:
    refs: set[str] = set()
    trees: set[str] = set()
    count = 0
    for root in roots:
        save_dirs = list(find_save_dirs(root))
        if not save_dirs:
            raise RunLockError(
                f"no run.lock under {root}: check the path; gc removes every snapshot that no run.lock "
                "under the roots references, so nothing was removed"
            )
        for save_dir in save_dirs:
            try:
                lock = RunLock.load(save_dir)
            except RunLockError as exc:
                raise RunLockError(
                    f"cannot tell which snapshots {save_dir} needs, so nothing was removed: {exc}. "
                    "Fix or remove that run.lock, or give roots that leave it out"
                ) from exc
            count += 1
            for state in lock.repos.values():
                trees.add(state.tree)
                if state.snapshot_ref:
                    refs.add(state.snapshot_ref)
    return _Recorded(frozenset(refs), frozenset(trees), count)


def _snapshots(repo: git.Repo) -> list[Snapshot]:
    """The commits under the snapshot namespace; anything else there was not made by capture."""
    fields = "%(refname) %(objecttype) %(objectname) %(tree) %(committerdate:unix)"
    listing = repo.git.for_each_ref(f"--format={fields}", SNAPSHOT_REF_PREFIX)
    snapshots = []
    for line in listing.splitlines():
        ref, kind, *rest = line.split()
        if kind == "commit":
            commit, tree, stamp = rest
            when = datetime.fromtimestamp(int(stamp), UTC)
            snapshots.append(Snapshot(repo.working_tree_dir, ref, commit, tree, when))
    return snapshots


def _delete(repo: git.Repo, snapshots: Sequence[Snapshot]) -> None:
    """One `update-ref` transaction: all or none, each only if it still holds the listed commit."""
    with tempfile.TemporaryFile() as commands:
        commands.write("".join(f"delete {s.ref} {s.commit}\n" for s in snapshots).encode())
        commands.seek(0)
        try:
            repo.git.update_ref("--stdin", istream=commands)
        except git.GitCommandError as exc:
            raise GitCaptureError(
                f"cannot delete snapshot refs in {repo.working_tree_dir}, none was: {exc.stderr.strip() or exc}"
            ) from exc
