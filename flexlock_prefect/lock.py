"""run.lock: the record of what went into a run, its fingerprint and digest, atomic I/O.

Each section of the file is a small frozen model that refuses unknown keys, so a truncated,
hand-edited or newer file is caught on load with a message naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from flexlock_prefect import storage
from flexlock_prefect.exceptions import FlexlockError, RunLockError, StorageError, StorageNotFound

SCHEMA_VERSION = 1
LOCK_FILENAME = "run.lock"
# libyaml's safe loader and dumper parse and write the same YAML ~7x faster than pure Python.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RepoState(_Section):
    """A code repository: `tree` is the working state incl. uncommitted and untracked files."""

    commit: str | None
    tree: str
    dirty: bool
    branch: str | None
    remote: str | None
    snapshot_ref: str | None
    path: str
    submodules: dict[str, str] = {}


class DataState(_Section):
    """A data input: a file or a directory, hashed with `algorithm`."""

    uri: str
    algorithm: str
    digest: str
    size: int
    files: int


class EnvState(_Section):
    python: str
    platform: str
    packages: dict[str, str]
    lockfiles: dict[str, str]


class PrefectState(_Section):
    flow_run_id: str | None
    flow_name: str | None
    deployment_name: str | None
    parameters: dict[str, Any]


class Lineage(_Section):
    logical_run_id: str
    fingerprint: str


class RunResult(_Section):
    status: Literal["completed", "failed"]
    started_at: str
    finished_at: str
    duration_s: float
    outputs: dict[str, str]
    error: str | None


def save_dir_name(logical_run_id: str) -> str:
    """The last part of a save_dir, what tells runs apart to a person (`s3://b/runs/exp-42/` → `exp-42`)."""
    return logical_run_id.rstrip("/").rsplit("/", 1)[-1]


def logical_run_key(logical_run_id: str) -> str:
    """16 hex of sha256(logical_run_id): names a logical run in event resources, artifact keys and
    MLflow searches (a save_dir may hold characters that MLflow filter strings cannot escape).

    Example:
        >>> logical_run_key("s3://bucket/runs/a")
        'de961c6972ce12f6'
    """
    return hashlib.sha256(logical_run_id.encode()).hexdigest()[:16]


def canonical_json(data: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. What every digest hashes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def compute_fingerprint(
    config: dict[str, Any],
    repos: dict[str, RepoState],
    data: dict[str, DataState],
    env: EnvState,
) -> str:
    """SHA-256 of the inputs alone (`fingerprint_inputs`), the same on any machine for the same inputs."""
    return hashlib.sha256(canonical_json(fingerprint_inputs(config, repos, data, env))).hexdigest()


def fingerprint_inputs(
    config: dict[str, Any],
    repos: dict[str, RepoState],
    data: dict[str, DataState],
    env: EnvState,
) -> dict[str, Any]:
    """What the fingerprint hashes: `{config, repos, data, lockfiles}`.

    The config without `save_dir` (and with the save_dir's value replaced by the text
    `${save_dir}` wherever a value embeds it, so `log: ${save_dir}/log` does not differ per run),
    the working-tree hash of each repo, `algorithm:digest` of each data input and the lockfile
    digests. Machine-specific facts (paths, URIs, hostnames, installed packages) are left out.
    A sweep's study key hashes the same inputs less what the sweep varies (`study.py`).
    """
    save_dir = config.get("save_dir")
    return {
        "config": _without_save_dir({k: v for k, v in config.items() if k != "save_dir"}, save_dir),
        "repos": {name: repo.tree for name, repo in repos.items()},
        "data": {name: f"{d.algorithm}:{d.digest}" for name, d in data.items()},
        "lockfiles": env.lockfiles,
    }


def _without_save_dir(value: Any, save_dir: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_save_dir(v, save_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_save_dir(v, save_dir) for v in value]
    if isinstance(value, str) and isinstance(save_dir, str) and save_dir:
        return value.replace(save_dir, "${save_dir}")
    return value


class RunLock(_Section):
    """The parsed content of one run.lock (DESIGN.md §3).

    Example:
        >>> lock = RunLock.load("runs/2026-11-22")          # doctest: +SKIP
        >>> lock.fingerprint, lock.digest, lock.config["lr"]  # doctest: +SKIP
    """

    flexlock: int = SCHEMA_VERSION
    logical_run_id: str
    created_at: str
    config: dict[str, Any]
    repos: dict[str, RepoState]
    data: dict[str, DataState]
    env: EnvState
    prefect: PrefectState | None = None
    lineage: dict[str, Lineage] = {}
    fingerprint: str
    result: RunResult | None = None

    @classmethod
    def create(
        cls,
        save_dir: str,
        config: dict[str, Any],
        repos: dict[str, RepoState],
        data: dict[str, DataState],
        env: EnvState,
        prefect: PrefectState | None = None,
        lineage: dict[str, Lineage] | None = None,
    ) -> RunLock:
        """A new record for `save_dir`, stamped now, with its fingerprint computed."""
        return cls(
            logical_run_id=storage.canonical_url(save_dir),
            created_at=utc_now(),
            config=config,
            repos=repos,
            data=data,
            env=env,
            prefect=prefect,
            lineage=lineage or {},
            fingerprint=compute_fingerprint(config, repos, data, env),
        )

    @property
    def save_dir(self) -> str:
        return self.logical_run_id

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical content: what MLflow and Prefect record to detect tampering."""
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True, width=100)

    def with_result(self, result: RunResult) -> RunLock:
        return self.model_copy(update={"result": result})

    def save(self, save_dir: str | None = None) -> str:
        """Write run.lock atomically into `save_dir` (default: its own); returns the file URL."""
        url = storage.join(storage.canonical_url(save_dir or self.logical_run_id), LOCK_FILENAME)
        storage.write_atomic(url, self.to_yaml().encode())
        return url

    @classmethod
    def load(cls, save_dir: str) -> RunLock:
        """Read and validate `<save_dir>/run.lock`.

        Raises:
            RunLockError: the file is missing, not YAML, truncated, of an unknown schema version,
                or its fingerprint does not match its inputs (edited after capture).
        """
        url = storage.join(storage.canonical_url(save_dir), LOCK_FILENAME)
        try:
            text = storage.read_bytes(url)
        except StorageNotFound as exc:
            raise RunLockError(f"no run.lock in {save_dir}: {exc}") from exc
        except StorageError as exc:
            raise RunLockError(f"cannot read the run.lock of {save_dir}: {exc}") from exc
        return cls.from_text(text, where=url)

    @classmethod
    def from_text(cls, text: bytes | str, where: str) -> RunLock:
        try:
            data = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise RunLockError(f"{where} is not valid YAML (truncated or corrupt?): {problem}") from exc
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunLock:
        lock = validate_record(cls, data, where, LOCK_FILENAME, SCHEMA_VERSION, RunLockError)
        expected = compute_fingerprint(lock.config, lock.repos, lock.data, lock.env)
        if lock.fingerprint != expected:
            raise RunLockError(
                f"{where}: the recorded fingerprint does not match the recorded inputs; the file was "
                "edited after capture. Re-run the flow to record it again"
            )
        return lock


Record = TypeVar("Record", bound=BaseModel)


def validate_record(
    model: type[Record], data: Any, where: str, kind: str, version: int, error: type[FlexlockError]
) -> Record:
    """A record file's parsed YAML (run.lock, sweep.lock) as `model`: a mapping whose `flexlock`
    schema version is `version`; else `error`, naming the file `where` and its problems."""
    if not isinstance(data, dict) or "flexlock" not in data:
        raise error(f"{where} is not a {kind}: expected a mapping with a `flexlock` schema version")
    if data["flexlock"] != version:
        raise error(
            f"{where} has {kind} schema version {data['flexlock']!r}; this flexlock-prefect reads version "
            f"{version}: upgrade flexlock-prefect to read it"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg']}" for e in exc.errors()[:5])
        raise error(f"{where} is incomplete or corrupt ({problems})") from exc


def find_save_dirs(root: str, max_depth: int = 6) -> Iterator[str]:
    """Canonical URLs of the save_dirs (directories holding a run.lock) at or below `root`.

    A save_dir's own subdirectories are not searched: they hold a run's outputs, not other runs.
    One listing per directory level, so S3 roots cost one request per prefix.

    Example:
        >>> list(find_save_dirs("s3://bucket/runs"))  # doctest: +SKIP
        ['s3://bucket/runs/2026-11-20', 's3://bucket/runs/2026-11-21']
    """
    return (url for url, _ in find_records(root, (), max_depth))


def find_records(root: str, others: Sequence[str], max_depth: int = 6) -> Iterator[tuple[str, str]]:
    """`(directory URL, record file name)` of the save_dirs at or below `root` (as `find_save_dirs`)
    and of the directories holding one of the `others` (`sweep.lock`), whose subdirectories
    (a sweep's trials) are searched too. One walk for both."""
    url = storage.canonical_url(root)
    fs, path = storage.filesystem(url)
    prefix = url[: len(url) - len(path)]
    pending = [(path, 0)]
    while pending:
        directory, depth = pending.pop()
        try:
            entries = fs.ls(directory, detail=True)
        except FileNotFoundError:
            continue
        except storage.unreadable() as exc:
            where = f"{prefix}{directory}"
            raise StorageError(f"cannot list {where} while looking for save_dirs under {root}: {exc}") from exc
        files = {n for e in entries if e["type"] == "file" and (n := e["name"].rstrip("/").rsplit("/", 1)[-1])}
        if LOCK_FILENAME in files:
            yield prefix + directory.rstrip("/"), LOCK_FILENAME
            continue
        for name in others:
            if name in files:
                yield prefix + directory.rstrip("/"), name
        if depth < max_depth:
            pending.extend(
                (entry["name"].rstrip("/"), depth + 1)
                for entry in sorted(entries, key=lambda e: e["name"], reverse=True)
                if entry["type"] == "directory"
            )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
