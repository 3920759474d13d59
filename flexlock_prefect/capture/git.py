"""The state of code repositories, captured without touching the user's index, HEAD or branches.

The working state (tracked changes and untracked, not ignored, files) is staged into a temporary
copy of the index (`GIT_INDEX_FILE`), written as a tree and, when it differs from HEAD, kept as
a commit under `refs/flexlock/snapshots/<tree>` so the exact code can be checked out later with
`git checkout <snapshot_ref>`. Every command runs with `GIT_OPTIONAL_LOCKS=0`, so even `git status`
does not refresh the user's index. Only new objects and the snapshot ref are ever written.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import git

from flexlock_prefect.capture.facet import Capture, Facet
from flexlock_prefect.exceptions import GitCaptureError
from flexlock_prefect.lock import RepoState
from flexlock_prefect.redact import strip_url_credentials

logger = logging.getLogger(__name__)

SNAPSHOT_REF_PREFIX = "refs/flexlock/snapshots/"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_SAFE_ENV = {"GIT_OPTIONAL_LOCKS": "0"}
_NO_FSMONITOR = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": "false"}
_NO_COMMIT_CHECKED_OUT = re.compile(r"'([^']+)' does not have a commit checked out")
_MAX_SKIPPED_NESTED_REPOS = 100
_SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "flexlock-prefect",
    "GIT_AUTHOR_EMAIL": "flexlock-prefect@localhost",
    "GIT_COMMITTER_NAME": "flexlock-prefect",
    "GIT_COMMITTER_EMAIL": "flexlock-prefect@localhost",
}


def _collect(capture: Capture) -> None:
    request = capture.request
    capture.sections["repos"] = capture_repos(request.repos, optional=request.settings.git_optional)


FACET = Facet("capture-code", _collect)
"""Each declared repo's commit, working tree and snapshot."""


def capture_repos(repos: Mapping[str, str | os.PathLike[str]], *, optional: bool = False) -> dict[str, RepoState]:
    """Capture each named repo; with `optional`, paths outside git are left out instead of failing."""
    states = {}
    for name, path in repos.items():
        state = capture_repo(path, optional=optional)
        if state is not None:
            states[name] = state
    return states


def capture_repo(path: str | os.PathLike[str], *, optional: bool = False) -> RepoState | None:
    """Commit, branch, remote, working-state tree and (when dirty) a snapshot ref of one repo.

    Example:
        >>> capture_repo(".").tree  # doctest: +SKIP
        '9f1c...'
    """
    repo = open_repo(path, optional=optional)
    if repo is None:
        return None
    try:
        head = _head_commit(repo)
        tree, left_out = _working_tree(repo, head)
        submodules = _submodule_commits(repo, tree)
        dirty = (
            bool(left_out)
            or tree != (head.tree.hexsha if head else EMPTY_TREE)
            or any(_is_dirty(Path(repo.working_tree_dir, sub)) for sub in submodules)
        )
        snapshot_ref = _snapshot(repo, tree, head) if dirty else None
    except git.GitCommandError as exc:
        raise GitCaptureError(
            f"cannot capture the git state of {repo.working_tree_dir}: {exc.stderr.strip() or exc}"
        ) from exc
    return RepoState(
        commit=head.hexsha if head else None,
        tree=tree,
        dirty=dirty,
        branch=None if repo.head.is_detached else repo.head.reference.name,
        remote=_remote_url(repo),
        snapshot_ref=snapshot_ref,
        path=Path(repo.working_tree_dir).as_posix(),
        submodules=submodules,
    )


def open_repo(path: str | os.PathLike[str], *, optional: bool = False) -> git.Repo | None:
    """The repository containing `path`, or a GitCaptureError that says how to fix it."""
    location = Path(path).expanduser()
    if not location.exists():
        if optional:
            return None
        raise GitCaptureError(f"repo path {location} does not exist: fix the path in `repos`")
    try:
        repo = git.Repo(location, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        if optional:
            return None
        raise GitCaptureError(
            f"{location.resolve()} is not inside a git repository: run `git init` there, remove it "
            "from `repos`, or set FLEXLOCK_GIT_OPTIONAL=true to record no code state for it"
        ) from exc
    if repo.bare:
        raise GitCaptureError(f"{location.resolve()} is a bare repository: point `repos` at a working tree")
    repo.git.update_environment(**_SAFE_ENV)
    return repo


def _head_commit(repo: git.Repo) -> git.Commit | None:
    try:
        return repo.head.commit
    except ValueError:  # unborn branch: a repository with no commit yet
        return None


def _working_tree(repo: git.Repo, head: git.Commit | None) -> tuple[str, list[str]]:
    """Stage the whole working state into a private index; its tree id and what was left out."""
    with _private_index(repo, head) as env:
        skipped: list[str] = []
        while True:
            excludes = [f":(exclude,literal){path}" for path in skipped]
            try:
                repo.git.add("--all", "--", ".", *excludes, env=env)
                break
            except git.GitCommandError as exc:
                # An untracked nested repository with no commit cannot be staged: leave it out.
                match = _NO_COMMIT_CHECKED_OUT.search(str(exc.stderr))
                if not match or len(skipped) >= _MAX_SKIPPED_NESTED_REPOS:
                    raise
                skipped.append(match.group(1).rstrip("/"))
                logger.warning(
                    "%s: left out nested repository %s, which has no commit yet", repo.working_tree_dir, skipped[-1]
                )
        return repo.git.write_tree(env=env), skipped


@contextmanager
def _private_index(repo: git.Repo, head: git.Commit | None) -> Iterator[dict[str, str]]:
    """A temporary index seeded from the user's (whose stat data makes `git add` fast) or HEAD.

    The copy keeps the index file's mtime, which git needs to tell a file edited in the same
    second as the last index write ("racily clean"), and loses the flags that would make
    `git add` skip edits (assume-unchanged; skip-worktree on files that are present).
    """
    scratch = Path(tempfile.mkdtemp(prefix="flexlock-index-"))
    try:
        env = {"GIT_INDEX_FILE": str(scratch / "index"), **_NO_FSMONITOR}
        user_index = Path(repo.git_dir) / "index"
        if user_index.is_file() and not _uses_split_index(repo):
            shutil.copy2(user_index, env["GIT_INDEX_FILE"])
            _clear_skip_flags(repo, env)
        elif head is not None:
            repo.git.read_tree(head.hexsha, env=env)
        yield env
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _clear_skip_flags(repo: git.Repo, env: dict[str, str]) -> None:
    assumed, skipped = [], []
    for entry in filter(None, repo.git.ls_files("-v", "-z", env=env).split("\0")):
        tag, path = entry[0], entry[2:]
        if tag.islower():
            assumed.append(path)
        if tag.upper() == "S" and Path(repo.working_tree_dir, path).exists():
            skipped.append(path)
    for flag, paths in (("--no-assume-unchanged", assumed), ("--no-skip-worktree", skipped)):
        for start in range(0, len(paths), 500):
            repo.git.update_index(flag, "--", *paths[start : start + 500], env=env)


def _uses_split_index(repo: git.Repo) -> bool:
    """A split index cannot be copied as one file; start from HEAD instead."""
    try:
        return repo.git.config("--get", "--bool", "core.splitIndex") == "true"
    except git.GitCommandError:
        return False


def _submodule_commits(repo: git.Repo, tree: str) -> dict[str, str]:
    """Path → commit of every submodule (gitlink) in the working-state tree."""
    listing = repo.git.ls_tree("-r", "-z", tree)
    commits = {}
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "commit":
            commits[path] = sha
    return commits


def _is_dirty(path: Path) -> bool:
    """Uncommitted or untracked changes inside a checked-out submodule."""
    if not (path / ".git").exists():
        return False
    sub = git.Repo(path)
    sub.git.update_environment(**_SAFE_ENV)
    return bool(sub.git.status("--porcelain", "--untracked-files=normal"))


def _snapshot(repo: git.Repo, tree: str, head: git.Commit | None) -> str:
    """Keep the working-state tree reachable as a commit under refs/flexlock/snapshots/<tree>."""
    ref = SNAPSHOT_REF_PREFIX + tree
    if _ref_holds_tree(repo, ref, tree):
        return ref
    parents = ["-p", head.hexsha] if head else []
    message = f"flexlock snapshot of the working tree of {head.hexsha if head else 'an unborn branch'}"
    commit = repo.git.commit_tree(tree, *parents, "-m", message, env=_SNAPSHOT_IDENTITY)
    repo.git.update_ref(ref, commit)
    return ref


def _remote_url(repo: git.Repo) -> str | None:
    remotes = {r.name: r for r in repo.remotes}
    remote = remotes.get("origin") or next(iter(remotes.values()), None)
    if remote is None:
        return None
    urls = list(remote.urls)
    return strip_url_credentials(urls[0]) if urls else None


def changed_files(a: RepoState, b: RepoState) -> list[str] | None:
    """`<status> <path>` lines between two recorded working states, or None if no repo holds both."""
    for path in dict.fromkeys((a.path, b.path)):
        repo = open_repo(path, optional=True)
        if repo is not None and _has_object(repo, a.tree, "tree") and _has_object(repo, b.tree, "tree"):
            listing = repo.git.diff_tree("-r", "--name-status", "--find-renames", a.tree, b.tree)
            return [" ".join(line.split("\t")) for line in listing.splitlines() if line]
    return None


def repo_problems(state: RepoState) -> list[str]:
    """What of a recorded code state can no longer be found in its repository."""
    repo = open_repo(state.path, optional=True)
    if repo is None:
        return [f"no git repository at {state.path}"]
    problems = []
    if state.commit and not _has_object(repo, state.commit, "commit"):
        problems.append(f"commit {state.commit} is missing from {state.path}")
    if not _has_object(repo, state.tree, "tree"):
        problems.append(f"tree {state.tree} is missing from {state.path}")
    if state.snapshot_ref and not _ref_holds_tree(repo, state.snapshot_ref, state.tree):
        problems.append(f"snapshot {state.snapshot_ref} is missing or no longer holds tree {state.tree}")
    return problems


def _has_object(repo: git.Repo, sha: str, kind: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}^{{{kind}}}")
    except git.GitCommandError:
        return False
    return True


def _ref_holds_tree(repo: git.Repo, ref: str, tree: str) -> bool:
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{tree}}") == tree
    except git.GitCommandError:
        return False
