"""Specifications of `flexlock_prefect.capture.git`: what run.lock `repos` records (DESIGN.md §3),
and that capturing never changes the user's index, HEAD, refs, stash or files.

Every test builds a real repository with the git command line under pytest's `tmp_path`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flexlock_prefect.capture.git import (
    SNAPSHOT_REF_PREFIX,
    capture_repo,
    capture_repos,
    changed_files,
    repo_problems,
)
from flexlock_prefect.exceptions import GitCaptureError
from tests.helpers.git_repos import (
    commit_all,
    git,
    make_repo,
    repo_state_fingerprint,
    tree_files,
    working_file_digests,
    write_files,
)

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
INITIAL_FILES = {
    ".gitignore": "*.log\n",
    "a.txt": "a\n",
    "src/b.py": "print('b')\n",
    "src/keep.txt": "unchanged\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repo on `main` that ignores `*.log`."""
    return make_repo(tmp_path / "repo", INITIAL_FILES)


@pytest.fixture
def dirty_repo(repo: Path) -> Path:
    """The committed repo with every kind of change a user leaves lying around before a run.

    a.txt modified but not staged, src/b.py changed and staged, new.txt untracked, debug.log
    ignored, and src/keep.txt touched (new mtime, same content): the user's index is stale for
    it, so anything that refreshes the index (a plain `git status`) would rewrite `.git/index`.
    """
    write_files(repo, {"src/b.py": "print('staged')\n"})
    git(repo, "add", "src/b.py")
    write_files(repo, {"a.txt": "a modified\n", "new.txt": "untracked\n", "debug.log": "ignored\n"})
    keep = repo / "src/keep.txt"
    stamp = keep.stat().st_mtime - 1000
    os.utime(keep, (stamp, stamp))
    return repo


@pytest.fixture
def not_a_repo(tmp_path: Path) -> Path:
    """A plain directory that no enclosing git repository claims."""
    plain = tmp_path / "plain"
    plain.mkdir()
    found = subprocess.run(["git", "-C", str(plain), "rev-parse", "--git-dir"], capture_output=True, check=False)
    if found.returncode == 0:
        pytest.skip("pytest's tmp_path is inside a git repository on this machine")
    return plain


# --- clean and dirty working states -------------------------------------------------------------


def test_clean_repo_records_head_commit_and_tree_and_branch_without_snapshot(repo: Path) -> None:
    state = capture_repo(repo)

    assert state is not None
    assert state.dirty is False
    assert state.snapshot_ref is None
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.tree == git(repo, "rev-parse", "HEAD^{tree}")
    assert state.branch == "main"
    assert state.remote is None
    assert state.submodules == {}


def test_dirty_tree_holds_modified_staged_and_untracked_files_but_not_ignored_ones(dirty_repo: Path) -> None:
    state = capture_repo(dirty_repo)

    assert state is not None
    assert state.dirty is True
    assert state.commit == git(dirty_repo, "rev-parse", "HEAD")
    assert tree_files(dirty_repo, state.tree) == {
        ".gitignore": "*.log",
        "a.txt": "a modified",
        "new.txt": "untracked",
        "src/b.py": "print('staged')",
        "src/keep.txt": "unchanged",
    }


def test_dirty_capture_keeps_the_tree_as_a_snapshot_commit_whose_parent_is_head(dirty_repo: Path) -> None:
    state = capture_repo(dirty_repo)

    assert state is not None
    assert state.snapshot_ref == f"{SNAPSHOT_REF_PREFIX}{state.tree}"
    assert state.snapshot_ref.startswith("refs/flexlock/snapshots/")
    assert git(dirty_repo, "rev-parse", f"{state.snapshot_ref}^{{tree}}") == state.tree
    snapshot_and_parents = git(dirty_repo, "rev-list", "--parents", "-n", "1", state.snapshot_ref).split()
    assert snapshot_and_parents[1:] == [git(dirty_repo, "rev-parse", "HEAD")]


def test_checking_out_the_snapshot_ref_reproduces_exactly_the_working_files(dirty_repo: Path, tmp_path: Path) -> None:
    state = capture_repo(dirty_repo)
    assert state is not None and state.snapshot_ref is not None

    checkout = tmp_path / "checkout"
    git(dirty_repo, "worktree", "add", "--detach", str(checkout), state.snapshot_ref)

    expected = working_file_digests(dirty_repo)
    del expected["debug.log"]  # ignored files are not part of the recorded code
    assert working_file_digests(checkout) == expected


# --- THE KEY PROMISE: the user's repo is untouched ----------------------------------------------


def test_dirty_capture_leaves_index_head_refs_and_files_byte_for_byte_unchanged(dirty_repo: Path) -> None:
    before = repo_state_fingerprint(dirty_repo)

    state = capture_repo(dirty_repo)

    assert state is not None and state.dirty is True
    assert repo_state_fingerprint(dirty_repo) == before


def test_the_fingerprint_would_notice_an_index_refresh(dirty_repo: Path) -> None:
    """Guards the key test: a capture that refreshed the user's index would be caught."""
    before = repo_state_fingerprint(dirty_repo)

    git(dirty_repo, "status", "--porcelain")  # optional locks on: git rewrites the stale index

    assert repo_state_fingerprint(dirty_repo)["index_sha256"] != before["index_sha256"]


def test_dirty_capture_with_a_stash_present_leaves_the_stash_and_the_repo_unchanged(repo: Path) -> None:
    write_files(repo, {"a.txt": "stashed work\n"})
    git(repo, "stash", "push", "-q", "-m", "work in progress")
    write_files(repo, {"a.txt": "current work\n", "new.txt": "untracked\n"})
    before = repo_state_fingerprint(repo)
    assert "work in progress" in before["stash"]

    state = capture_repo(repo)

    assert state is not None and state.dirty is True
    assert tree_files(repo, state.tree)["a.txt"] == "current work"
    assert repo_state_fingerprint(repo) == before


def test_capture_of_a_staged_but_uncommitted_change_records_it_and_leaves_the_index_unchanged(
    repo: Path,
) -> None:
    write_files(repo, {"a.txt": "staged\n", "src/added.py": "x = 1\n"})
    git(repo, "add", "a.txt", "src/added.py")
    before = repo_state_fingerprint(repo)

    state = capture_repo(repo)

    assert state is not None and state.dirty is True
    recorded = tree_files(repo, state.tree)
    assert recorded["a.txt"] == "staged"
    assert recorded["src/added.py"] == "x = 1"
    assert repo_state_fingerprint(repo) == before
    assert git(repo, "diff", "--cached", "--name-only").splitlines() == ["a.txt", "src/added.py"]


# --- identity of the recorded state -------------------------------------------------------------


def test_capturing_the_same_dirty_state_twice_gives_the_same_tree_and_snapshot_ref(dirty_repo: Path) -> None:
    first = capture_repo(dirty_repo)
    second = capture_repo(dirty_repo)

    assert first is not None and second is not None
    assert second.tree == first.tree
    assert second.snapshot_ref == first.snapshot_ref
    assert git(dirty_repo, "for-each-ref", "--format=%(refname)", "refs/flexlock/").splitlines() == [first.snapshot_ref]


def test_a_further_edit_gives_a_different_tree_and_keeps_the_earlier_snapshot(dirty_repo: Path) -> None:
    first = capture_repo(dirty_repo)
    write_files(dirty_repo, {"new.txt": "edited again\n"})
    second = capture_repo(dirty_repo)

    assert first is not None and second is not None
    assert second.tree != first.tree
    assert second.snapshot_ref != first.snapshot_ref
    assert git(dirty_repo, "rev-parse", f"{first.snapshot_ref}^{{tree}}") == first.tree
    assert git(dirty_repo, "rev-parse", f"{second.snapshot_ref}^{{tree}}") == second.tree


def test_a_deleted_tracked_file_is_absent_from_the_tree(repo: Path) -> None:
    (repo / "src/b.py").unlink()

    state = capture_repo(repo)

    assert state is not None and state.dirty is True
    assert "src/b.py" not in tree_files(repo, state.tree)
    assert "src/keep.txt" in tree_files(repo, state.tree)


# --- HEAD in unusual places ---------------------------------------------------------------------


def test_detached_head_records_no_branch_and_the_detached_commit(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    write_files(repo, {"a.txt": "second\n"})
    commit_all(repo, "second")
    git(repo, "checkout", "-q", "--detach", first)

    state = capture_repo(repo)

    assert state is not None
    assert state.branch is None
    assert state.commit == first
    assert state.dirty is False


def test_unborn_repo_with_files_records_no_commit_and_a_parentless_snapshot(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "unborn", {"a.txt": "a\n", "src/b.py": "b\n"}, commit=False, branch="trunk")

    state = capture_repo(repo)

    assert state is not None
    assert state.commit is None
    assert state.branch == "trunk"
    assert state.dirty is True
    assert tree_files(repo, state.tree) == {"a.txt": "a", "src/b.py": "b"}
    assert state.snapshot_ref == f"{SNAPSHOT_REF_PREFIX}{state.tree}"
    assert git(repo, "rev-parse", f"{state.snapshot_ref}^{{tree}}") == state.tree
    assert git(repo, "rev-list", "--parents", "-n", "1", state.snapshot_ref).split()[1:] == []


def test_empty_unborn_repo_records_the_empty_tree_and_is_clean(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "empty", commit=False)

    state = capture_repo(repo)

    assert state is not None
    assert state.commit is None
    assert state.branch == "main"
    assert state.tree == EMPTY_TREE
    assert state.dirty is False
    assert state.snapshot_ref is None


# --- submodules ---------------------------------------------------------------------------------


@pytest.fixture
def superproject(tmp_path: Path) -> Path:
    """`super` with the repo `sub` checked out at libs/sub and committed."""
    sub = make_repo(tmp_path / "sub", {"lib.py": "VERSION = 1\n"})
    sup = make_repo(tmp_path / "super", {"main.py": "import lib\n"})
    git(sup, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sub")
    commit_all(sup, "add submodule")
    return sup


def test_submodule_commit_is_recorded_and_a_clean_superproject_is_not_dirty(superproject: Path, tmp_path: Path) -> None:
    state = capture_repo(superproject)

    assert state is not None
    assert state.submodules == {"libs/sub": git(tmp_path / "sub", "rev-parse", "HEAD")}
    assert state.dirty is False
    assert state.snapshot_ref is None


def test_a_new_commit_inside_a_submodule_changes_its_recorded_commit_and_dirties_the_superproject(
    superproject: Path,
) -> None:
    checkout = superproject / "libs/sub"
    before = capture_repo(superproject)
    git(checkout, "config", "user.name", "FlexLock Tests")
    git(checkout, "config", "user.email", "tests@flexlock.invalid")
    write_files(checkout, {"lib.py": "VERSION = 2\n"})
    new_commit = commit_all(checkout, "bump")

    after = capture_repo(superproject)

    assert before is not None and after is not None
    assert after.submodules == {"libs/sub": new_commit}
    assert after.submodules != before.submodules
    assert after.dirty is True
    assert after.commit == before.commit


def test_an_untracked_file_inside_a_submodule_dirties_the_superproject_and_touches_neither_repo(
    superproject: Path,
) -> None:
    checkout = superproject / "libs/sub"
    write_files(checkout, {"scratch.py": "print('experiment')\n"})
    lib = checkout / "lib.py"
    stamp = lib.stat().st_mtime - 1000  # stale stat in the submodule's index: a refresh would show
    os.utime(lib, (stamp, stamp))
    super_before = repo_state_fingerprint(superproject)
    sub_before = repo_state_fingerprint(checkout)

    state = capture_repo(superproject)

    assert state is not None
    assert state.dirty is True
    assert state.submodules == {"libs/sub": git(checkout, "rev-parse", "HEAD")}
    assert repo_state_fingerprint(superproject) == super_before
    assert repo_state_fingerprint(checkout) == sub_before


# --- remotes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://user:s3cr3t@example.com/r.git", "https://example.com/r.git"),
        ("https://ghp_token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ],
)
def test_remote_url_is_recorded_without_credentials(repo: Path, url: str, recorded: str) -> None:
    git(repo, "remote", "add", "origin", url)

    state = capture_repo(repo)

    assert state is not None
    assert state.remote == recorded
    for secret in ("s3cr3t", "ghp_token"):
        assert secret not in state.model_dump_json()


# --- paths that are not repositories ------------------------------------------------------------


def test_a_path_outside_any_repository_raises_git_capture_error_naming_the_path(not_a_repo: Path) -> None:
    with pytest.raises(GitCaptureError, match="not inside a git repository") as caught:
        capture_repo(not_a_repo)

    assert str(not_a_repo.resolve()) in str(caught.value)


def test_a_path_outside_any_repository_is_skipped_when_optional(not_a_repo: Path) -> None:
    assert capture_repo(not_a_repo, optional=True) is None


def test_a_nonexistent_path_raises_git_capture_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"

    with pytest.raises(GitCaptureError, match="does not exist") as caught:
        capture_repo(missing)

    assert str(missing) in str(caught.value)


def test_capture_repos_with_optional_leaves_out_paths_that_are_not_repositories(repo: Path, not_a_repo: Path) -> None:
    states = capture_repos({"a": repo, "b": not_a_repo}, optional=True)

    assert list(states) == ["a"]
    assert states["a"].commit == git(repo, "rev-parse", "HEAD")


def test_capture_repos_without_optional_fails_on_a_path_that_is_not_a_repository(repo: Path, not_a_repo: Path) -> None:
    with pytest.raises(GitCaptureError):
        capture_repos({"a": repo, "b": not_a_repo})


def test_capturing_from_a_subdirectory_records_the_repository_root_as_path(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = git(repo, "rev-parse", "--show-toplevel")

    from_subdir = capture_repo(repo / "src")
    monkeypatch.chdir(repo / "src")
    from_relative = capture_repo(".")

    assert from_subdir is not None and from_relative is not None
    assert from_subdir.path == root == repo.as_posix()
    assert from_relative.path == root
    assert from_subdir.tree == from_relative.tree == git(repo, "rev-parse", "HEAD^{tree}")


# --- comparing and checking recorded states -----------------------------------------------------


def test_changed_files_lists_status_and_path_between_two_captured_states(repo: Path) -> None:
    before = capture_repo(repo)
    write_files(repo, {"a.txt": "changed\n", "new.txt": "new\n"})
    (repo / "src/b.py").unlink()
    after = capture_repo(repo)

    assert before is not None and after is not None
    assert changed_files(before, after) == ["M a.txt", "A new.txt", "D src/b.py"]
    assert changed_files(before, before) == []


def test_changed_files_is_none_when_no_repository_holds_both_states(tmp_path: Path) -> None:
    one = capture_repo(make_repo(tmp_path / "one", {"a.txt": "one\n"}))
    two = capture_repo(make_repo(tmp_path / "two", {"a.txt": "two\n"}))

    assert one is not None and two is not None
    assert changed_files(one, two) is None


def test_repo_problems_is_empty_for_a_fresh_capture(dirty_repo: Path) -> None:
    state = capture_repo(dirty_repo)

    assert state is not None
    assert repo_problems(state) == []


def test_repo_problems_names_a_deleted_snapshot_ref(dirty_repo: Path) -> None:
    state = capture_repo(dirty_repo)
    assert state is not None and state.snapshot_ref is not None
    git(dirty_repo, "update-ref", "-d", state.snapshot_ref)

    problems = repo_problems(state)

    assert len(problems) == 1
    assert state.snapshot_ref in problems[0]


def test_repo_problems_names_the_repository_path_when_the_repository_is_gone(repo: Path) -> None:
    state = capture_repo(repo)
    assert state is not None
    shutil.rmtree(repo)

    problems = repo_problems(state)

    assert len(problems) == 1
    assert state.path in problems[0]


# --- states that git itself treats specially ---------------------------------------------------


def _start_of_next_second() -> None:
    time.sleep(1.02 - time.time() % 1)


def test_a_same_size_edit_in_the_second_of_the_last_index_write_is_captured(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "racy", {"a.txt": "a\n"})
    for _attempt in range(3):  # the edit must land in the same whole second as the index write
        _start_of_next_second()
        write_files(repo, {"a.txt": "a\n"})
        git(repo, "add", "a.txt")
        write_files(repo, {"a.txt": "z\n"})  # same size as the staged content
        index_second = int((repo / ".git/index").stat().st_mtime)
        if index_second == int((repo / "a.txt").stat().st_mtime) == int(time.time()):
            break
    else:
        pytest.skip("could not fit the edit into the second of the index write")
    assert git(repo, "diff", "--name-only", env={"GIT_OPTIONAL_LOCKS": "0"}) == "a.txt"
    _start_of_next_second()  # the capture (and its copy of the index) happens a second later

    state = capture_repo(repo)

    assert state is not None
    assert tree_files(repo, state.tree)["a.txt"] == "z"
    assert state.dirty is True


def test_an_edit_to_an_assume_unchanged_file_is_captured(repo: Path) -> None:
    git(repo, "update-index", "--assume-unchanged", "a.txt")
    write_files(repo, {"a.txt": "edited behind git's back\n"})

    state = capture_repo(repo)

    assert state is not None
    assert tree_files(repo, state.tree)["a.txt"] == "edited behind git's back"
    assert state.dirty is True


def test_an_untracked_nested_repository_without_commits_does_not_break_capture(repo: Path) -> None:
    make_repo(repo / "scratch", {"notes.txt": "n\n"}, commit=False)

    state = capture_repo(repo)

    assert state is not None
    assert state.dirty is True
