"""Specifications of `flexlock_prefect.gc`: which snapshot refs `gc_snapshots` removes and which it
keeps, that it refuses rather than guesses, and that it touches no other ref, the index or HEAD.

Every test builds a real repository with the git command line and records real runs in it with
`capture_run`; an old snapshot is made by capturing with a fixed `GIT_COMMITTER_DATE`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from flexlock_prefect.exceptions import GitCaptureError, RunLockError
from flexlock_prefect.gc import gc_snapshots
from tests.helpers.git_repos import commit_all, git, make_repo, repo_state_fingerprint, write_files

LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"train.py": "print('v1')\n"})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def locked_run(repo: Path, runs: Path, name: str, *, committed_at: str | None = None) -> str:
    """Edit train.py, record a run of the dirty repo under `runs/name`; the snapshot ref it records."""
    write_files(repo, {"train.py": f"print({name!r})\n"})
    with pytest.MonkeyPatch.context() as patch:
        if committed_at:
            patch.setenv("GIT_COMMITTER_DATE", committed_at)
        _, lock = capture_run({"lr": 0.1, "save_dir": str(runs / name)}, repos={"code": repo})
    lock.save()
    assert lock.repos["code"].snapshot_ref is not None
    return lock.repos["code"].snapshot_ref


def deleted_run(repo: Path, runs: Path, name: str, *, committed_at: str | None = None) -> str:
    """A run recorded and then deleted: its snapshot ref is left behind, referenced by nothing."""
    ref = locked_run(repo, runs, name, committed_at=committed_at)
    shutil.rmtree(runs / name)
    return ref


def snapshot_refs(repo: Path) -> list[str]:
    return sorted(git(repo, "for-each-ref", "--format=%(refname)", "refs/flexlock/snapshots/").splitlines())


def test_a_snapshot_a_run_lock_records_is_kept_and_one_of_a_deleted_run_is_removed(repo: Path, runs: Path) -> None:
    kept = locked_run(repo, runs, "kept")
    gone = deleted_run(repo, runs, "gone")
    result = gc_snapshots([repo], [str(runs)])
    assert [s.ref for s in result.removed] == [gone]
    assert (result.referenced, result.young, result.run_locks, result.dry_run) == (1, 0, 1, False)
    assert snapshot_refs(repo) == [kept]


def test_the_removed_snapshot_is_described_by_its_commit_tree_repo_and_date(repo: Path, runs: Path) -> None:
    locked_run(repo, runs, "kept")
    gone = deleted_run(repo, runs, "gone", committed_at=LONG_AGO)
    commit = git(repo, "rev-parse", gone)
    [snapshot] = gc_snapshots([repo], [str(runs)]).removed
    assert (snapshot.ref, snapshot.commit, snapshot.repo) == (gone, commit, str(repo))
    assert snapshot.tree == git(repo, "rev-parse", f"{commit}^{{tree}}") == gone.rsplit("/", 1)[1]
    assert snapshot.committed_at.isoformat() == "2020-01-01T00:00:00+00:00"


def test_a_run_lock_that_records_the_snapshot_tree_without_its_ref_keeps_it(repo: Path, runs: Path) -> None:
    """A clean run of the same working state (committed later, or in another clone) needs that tree."""
    snapshot = deleted_run(repo, runs, "dirty")
    commit_all(repo, "the state the deleted run had")
    _, lock = capture_run({"lr": 0.1, "save_dir": str(runs / "clean")}, repos={"code": repo})
    lock.save()
    assert lock.repos["code"].snapshot_ref is None and lock.repos["code"].tree == snapshot.rsplit("/", 1)[1]
    result = gc_snapshots([repo], [str(runs)])
    assert (result.removed, result.referenced) == ((), 1)
    assert snapshot_refs(repo) == [snapshot]


def test_a_run_lock_keeps_its_snapshot_after_the_repository_moved(repo: Path, runs: Path, tmp_path: Path) -> None:
    """The recorded path is where the repo was at capture time: a snapshot is matched by ref and tree."""
    kept = locked_run(repo, runs, "kept")
    moved = Path(shutil.move(repo, tmp_path / "moved"))
    result = gc_snapshots([moved], [str(runs)])
    assert (result.removed, result.referenced) == ((), 1)
    assert snapshot_refs(moved) == [kept]


def test_a_dry_run_lists_the_same_snapshots_and_removes_nothing(repo: Path, runs: Path) -> None:
    locked_run(repo, runs, "kept")
    deleted_run(repo, runs, "gone-1")
    deleted_run(repo, runs, "gone-2")
    before = snapshot_refs(repo)
    dry = gc_snapshots([repo], [str(runs)], dry_run=True)
    assert dry.dry_run and len(dry.removed) == 2
    assert snapshot_refs(repo) == before
    wet = gc_snapshots([repo], [str(runs)])
    assert [s.ref for s in wet.removed] == [s.ref for s in dry.removed]
    assert len(snapshot_refs(repo)) == 1


def test_older_than_keeps_unreferenced_snapshots_younger_than_that_many_days(repo: Path, runs: Path) -> None:
    locked_run(repo, runs, "kept")
    young = deleted_run(repo, runs, "young")
    old = deleted_run(repo, runs, "old", committed_at=LONG_AGO)
    result = gc_snapshots([repo], [str(runs)], older_than_days=30)
    assert [s.ref for s in result.removed] == [old]
    assert (result.referenced, result.young) == (1, 1)
    assert young in snapshot_refs(repo) and old not in snapshot_refs(repo)


def test_an_unreadable_run_lock_stops_the_collection_and_nothing_is_removed(repo: Path, runs: Path) -> None:
    locked_run(repo, runs, "kept")
    deleted_run(repo, runs, "gone")
    (runs / "broken").mkdir()
    (runs / "broken" / "run.lock").write_text("flexlock: 1\nconfig: [")
    before = snapshot_refs(repo)
    with pytest.raises(RunLockError) as raised:
        gc_snapshots([repo], [str(runs)])
    message = str(raised.value)
    assert f"{runs}/broken/run.lock" in message and "is not valid YAML" in message
    assert (
        "nothing was removed" in message and "Fix or remove that run.lock, or give roots that leave it out" in message
    )
    assert snapshot_refs(repo) == before


def test_a_run_lock_edited_after_capture_also_stops_the_collection(repo: Path, runs: Path) -> None:
    """A lock whose fingerprint no longer matches may still name snapshots: it is not skipped either."""
    locked_run(repo, runs, "edited")
    deleted_run(repo, runs, "gone")
    lock = runs / "edited" / "run.lock"
    lock.write_text(lock.read_text().replace("lr: 0.1", "lr: 0.2"))
    before = snapshot_refs(repo)
    with pytest.raises(RunLockError, match="the recorded fingerprint does not match"):
        gc_snapshots([repo], [str(runs)])
    assert snapshot_refs(repo) == before


def test_a_root_without_any_run_lock_stops_the_collection(repo: Path, runs: Path, tmp_path: Path) -> None:
    """A mistyped root would otherwise make every snapshot look unreferenced."""
    locked_run(repo, runs, "kept")
    before = snapshot_refs(repo)
    with pytest.raises(RunLockError, match=f"no run.lock under {tmp_path}/typo: check the path"):
        gc_snapshots([repo], [str(runs), str(tmp_path / "typo")])
    assert snapshot_refs(repo) == before


def test_every_repo_is_collected_against_the_run_locks_of_every_root(runs: Path, tmp_path: Path) -> None:
    first, second = (
        make_repo(tmp_path / name, {"train.py": "v1\n", "src/util.py": ""}) for name in ("first", "second")
    )
    kept_first = locked_run(first, runs / "a", "kept")
    kept_second = locked_run(second, tmp_path / "other-runs", "kept")
    gone_first = deleted_run(first, runs / "a", "gone")
    gone_second = deleted_run(second, runs / "b", "gone")
    result = gc_snapshots([first, second, first / "src"], [str(runs), str(tmp_path / "other-runs")])
    assert sorted(s.ref for s in result.removed) == sorted([gone_first, gone_second])
    assert (result.referenced, result.run_locks) == (2, 2)
    assert (snapshot_refs(first), snapshot_refs(second)) == ([kept_first], [kept_second])


def test_collecting_changes_no_other_ref_nor_the_index_head_branches_stash_or_files(repo: Path, runs: Path) -> None:
    locked_run(repo, runs, "kept")
    gone = deleted_run(repo, runs, "gone")
    old = deleted_run(repo, runs, "old", committed_at=LONG_AGO)
    git(repo, "branch", "feature")
    git(repo, "tag", "v1")
    git(repo, "update-ref", "refs/flexlock/other", "HEAD")  # flexlock's namespace, but no snapshot
    blob = git(repo, "hash-object", "-w", "train.py")
    git(repo, "update-ref", "refs/flexlock/snapshots/not-a-commit", blob)
    git(repo, "pack-refs", "--all")  # snapshot refs in packed-refs, as after a `git gc`
    write_files(repo, {"staged.py": "x\n"})
    git(repo, "add", "staged.py")
    state = repo_state_fingerprint(repo)
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    result = gc_snapshots([repo], [str(runs)])
    assert sorted(s.ref for s in result.removed) == sorted([gone, old])
    assert repo_state_fingerprint(repo) == state
    remaining = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    assert remaining == [line for line in refs if line.split()[0] not in {gone, old}]


def test_a_path_outside_any_repository_is_refused_naming_it(runs: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    if subprocess.run(["git", "-C", str(plain), "rev-parse"], capture_output=True, check=False).returncode == 0:
        pytest.skip("pytest's tmp_path is inside a git repository on this machine")
    with pytest.raises(GitCaptureError, match=f"{plain} is not inside a git repository: give --repo"):
        gc_snapshots([plain], [str(runs)])


@pytest.mark.integration
def test_run_locks_under_an_s3_root_keep_their_snapshots(repo: Path, s3_bucket: str) -> None:
    write_files(repo, {"train.py": "print('s3')\n"})
    _, lock = capture_run({"lr": 0.1, "save_dir": f"{s3_bucket}/runs/kept"}, repos={"code": repo})
    lock.save()
    gone = deleted_run(repo, repo.parent / "local-runs", "gone")
    result = gc_snapshots([repo], [f"{s3_bucket}/runs"])
    assert ([s.ref for s in result.removed], result.referenced) == ([gone], 1)
    assert snapshot_refs(repo) == [lock.repos["code"].snapshot_ref]
