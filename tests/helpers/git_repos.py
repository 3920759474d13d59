"""Real git repositories in temp dirs, built with the `git` command line, for the capture tests.

Why the command line and not GitPython or mocks: the module under test drives git through
GitPython, so building and inspecting repos with plain `git` keeps the test's view of a repo
independent of the code that is being tested.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Read-only inspection must not refresh the user's index as a side effect (`git status` and friends
# rewrite `.git/index` with fresh stat data unless optional locks are off). Without this, the
# fingerprint itself could change the state it is meant to observe.
_READ_ONLY_ENV = {"GIT_OPTIONAL_LOCKS": "0"}

SNAPSHOT_NAMESPACE = "refs/flexlock/"


class GitError(AssertionError):
    """A git command used to build or inspect a test repo failed; carries git's stderr."""


def git(path: str | os.PathLike[str], *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `git -C path *args` and return its stdout without the trailing newline.

    Fails loudly (with git's stderr) so a broken fixture is never mistaken for a capture bug.

    Example:
        >>> git(repo, "rev-parse", "HEAD")  # doctest: +SKIP
        '3f2a...'
    """
    result = subprocess.run(
        ["git", "-C", str(path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {path} ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.removesuffix("\n")


def write_files(root: str | os.PathLike[str], files: Mapping[str, str | bytes]) -> None:
    """Write `relative path -> content` under `root`, creating parent directories.

    Example:
        >>> write_files(repo, {"src/a.py": "print(1)\\n"})  # doctest: +SKIP
    """
    for relpath, content in files.items():
        target = Path(root, relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def make_repo(
    path: str | os.PathLike[str],
    files: Mapping[str, str | bytes] | None = None,
    *,
    commit: bool = True,
    branch: str = "main",
) -> Path:
    """A new repository at `path` on `branch`, holding `files`, committed unless `commit=False`.

    The branch is set with `git init -b` and the identity is set in the repo's own config, so
    branch names and commits do not depend on the machine's global git configuration.

    Example:
        >>> repo = make_repo(tmp_path / "r", {"a.txt": "a\\n"})  # doctest: +SKIP
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", branch)
    git(root, "config", "user.name", "FlexLock Tests")
    git(root, "config", "user.email", "tests@flexlock.invalid")
    git(root, "config", "commit.gpgsign", "false")
    if files:
        write_files(root, files)
    if commit and files:
        commit_all(root, "initial commit")
    return root


def commit_all(path: str | os.PathLike[str], message: str = "commit") -> str:
    """Stage everything and commit it; returns the new HEAD commit id."""
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def git_dir(path: str | os.PathLike[str]) -> Path:
    """The repository's git directory, also for submodule checkouts whose `.git` is a file."""
    return Path(git(path, "rev-parse", "--absolute-git-dir", env=_READ_ONLY_ENV))


def tree_files(path: str | os.PathLike[str], tree: str) -> dict[str, str]:
    """`path -> text content` of every blob in `tree` (gitlinks appear as `<commit sha>`).

    Why not read a checkout: reading the object database shows exactly what was recorded,
    without a checkout step that could hide or add files.
    """
    listing = git(path, "ls-tree", "-r", "-z", tree)
    contents = {}
    for entry in filter(None, listing.split("\0")):
        meta, name = entry.split("\t", 1)
        _mode, kind, sha = meta.split()
        contents[name] = git(path, "show", f"{tree}:{name}") if kind == "blob" else f"<commit {sha}>"
    return contents


def working_file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every file under `path`, by posix relative path, skipping anything named `.git`.

    Why a walk and not `git ls-files`: the user's files include untracked and ignored ones, and a
    capture must not touch those either. Symlinks are recorded by their target, not followed.
    """
    root = Path(path)
    digests = {}
    for current, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            if name == ".git":  # a submodule checkout's gitfile
                continue
            file = Path(current, name)
            data = os.readlink(file).encode() if file.is_symlink() else file.read_bytes()
            digests[file.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return digests


def repo_state_fingerprint(path: str | os.PathLike[str]) -> dict[str, object]:
    """Everything a capture promises not to change, as a dict to compare before and after.

    A capture may only add objects and refs under `refs/flexlock/`. So this records, byte for byte:
    the index file (a capture that stages through the user's index, or lets git refresh it, changes
    it), HEAD, every other ref and the packed-refs lines that are not flexlock's, the reflogs other
    than flexlock's, the stash, the repo-local config, the small files at the top of the git
    directory (ORIG_HEAD, MERGE_HEAD, ...), any leftover `*.lock` file, and the sha256 of every
    working-tree file. All inspection runs with optional locks off, so taking a fingerprint does
    not itself refresh the index.

    Example:
        >>> before = repo_state_fingerprint(repo)  # doctest: +SKIP
        >>> capture_repo(repo)  # doctest: +SKIP
        >>> assert repo_state_fingerprint(repo) == before  # doctest: +SKIP
    """
    gdir = git_dir(path)
    index = gdir / "index"
    packed_refs = gdir / "packed-refs"
    refs = git(path, "for-each-ref", "--format=%(refname) %(objectname) %(symref)", env=_READ_ONLY_ENV)
    return {
        "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else None,
        "HEAD": (gdir / "HEAD").read_text(),
        "refs": [line for line in refs.splitlines() if not line.startswith(SNAPSHOT_NAMESPACE)],
        "packed_refs": [
            line
            for line in (packed_refs.read_text().splitlines() if packed_refs.exists() else [])
            if SNAPSHOT_NAMESPACE not in line
        ],
        "reflogs": _reflogs(gdir),
        "stash": git(path, "stash", "list", "--format=%H %gs", env=_READ_ONLY_ENV),
        "config": git(path, "config", "--list", "--local", env=_READ_ONLY_ENV),
        "git_dir_files": {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(gdir.iterdir())
            if f.is_file() and f.name not in {"index", "packed-refs"}
        },
        "lock_files": sorted(p.relative_to(gdir).as_posix() for p in gdir.rglob("*.lock")),
        "working_files": working_file_digests(path),
    }


def _reflogs(gdir: Path) -> dict[str, str]:
    """Reflog contents outside `logs/refs/flexlock/`: a capture must not move HEAD or a branch."""
    logs = gdir / "logs"
    if not logs.is_dir():
        return {}
    return {
        f.relative_to(logs).as_posix(): f.read_text()
        for f in sorted(logs.rglob("*"))
        if f.is_file() and not f.relative_to(logs).as_posix().startswith(SNAPSHOT_NAMESPACE)
    }
