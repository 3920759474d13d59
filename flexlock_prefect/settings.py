"""Every knob of flexlock-prefect in one place, read from `FLEXLOCK_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flexlock_prefect.exceptions import SettingsError

HashAlgorithm = Literal["xxh3-128-tree", "sha256"]


@contextmanager
def temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set inside the block, as it was after it."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flexlock-prefect"


class FlexlockSettings(BaseSettings):
    """Every operational knob of flexlock-prefect, each `FLEXLOCK_<NAME>` in the environment.

    Example:
        `FLEXLOCK_HASH_ALGORITHM=sha256 flexlock-prefect verify runs/a` re-hashes with SHA-256;
        `FLEXLOCK_RELOG_WORKERS=8 flexlock-prefect relog --root runs` relogs 8 save_dirs at once.
    """

    model_config = SettingsConfigDict(env_prefix="FLEXLOCK_", extra="ignore", frozen=True)

    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where the stat cache of data digests lives.",
    )
    stat_cache: bool = Field(
        default=True,
        description="Reuse the digest of a file whose inode, size, mtime and ctime are unchanged.",
    )
    hash_algorithm: HashAlgorithm = Field(
        default="xxh3-128-tree",
        description=(
            "Digest of data files. `xxh3-128-tree` is near the speed of a raw read and detects any "
            "accidental change; `sha256` is slower but resists deliberate collisions."
        ),
    )
    hash_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Threads hashing the 64 MiB blocks of one large file, or large files of a tree.",
    )
    progress_min_bytes: int = Field(
        default=256 * 1024**2,
        ge=0,
        description="Show a progress bar on a terminal when a capture reads at least this many bytes.",
    )
    secret_key_words: list[str] = Field(
        default=[
            "password",
            "passwd",
            "pwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "access_key",
            "secret_key",
            "private_key",
            "credential",
            "credentials",
            "auth",
            "session_key",
        ],
        description=(
            "A config key is secret when one of these appears in it as a whole word "
            "(`hf_token`, `dbPassword`), but not inside another word (`tokenizer`, `max_tokens`)."
        ),
    )
    secret_value_patterns: list[str] = Field(
        default=[
            # URL with user:password; bounded repeats keep matching linear on long values
            r"[a-z][a-z0-9+.\-]{0,31}://[^/\s:@]{1,256}:[^/\s@]{1,256}@",
            r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
            r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub token
            r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",  # Slack token
            r"\bsk-[A-Za-z0-9_\-]{20,}\b",  # API keys of the sk- family
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        ],
        description="Regular expressions; a config string value matching one is redacted whole.",
    )
    git_optional: bool = Field(
        default=False,
        description="Record a repo path that is not in a git repository as absent instead of failing.",
    )

    # MLflow: relogging, reconcile, the default diag body.
    relog_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="save_dirs relogged at once by `relog` (each in a thread, each a few requests at a time).",
    )
    reconcile_stale_after_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Without a Prefect lock, a relog still RUNNING after this long is taken for dead and ended "
            "FAILED by `reconcile` (with the lock, at once: no relog can be in flight)."
        ),
    )
    tracking_health_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries of an HTTP tracking server's /health before an operation gives up (0.5 s, 1 s, … apart).",
    )
    tracking_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description=(
            "MLflow's HTTP retries of a request inside a flexlock operation (backoff factor 1: about 10 s "
            "in all) when MLFLOW_HTTP_REQUEST_MAX_RETRIES is unset. MLflow's own default, 7 with factor 2, "
            "waits about 4 minutes for a server lost mid-operation."
        ),
    )
    tracking_healthy_for_s: float = Field(
        default=30.0,
        ge=0,
        description="A tracking server that answered is not probed again for this long.",
    )
    artifact_suffixes: list[str] = Field(
        default=[".png", ".jpg", ".jpeg", ".svg", ".html", ".pkl", ".joblib", ".json", ".txt", ".csv", ".md"],
        min_length=1,
        description="Top-level files of a save_dir with these suffixes are logged as artifacts by the default body.",
    )
    max_artifact_bytes: int = Field(
        default=256 * 1024**2,
        ge=0,
        description="Larger files are not logged as artifacts by the default diag body.",
    )

    # Prefect: locks and approvals.
    lock_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a relog, reconcile or registry move waits for the lock of its save_dir or model.",
    )
    lock_lease_s: float = Field(
        default=60.0,
        ge=5,
        description=(
            "A lock's holder renews its lease every third of this period; a waiter frees the lock of a "
            "holder silent for a whole period, so a killed holder delays others by about this long on "
            "any Prefect server. Prefect's own lease is renewed with it (never under Prefect's 60 s)."
        ),
    )
    api_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description=(
            "How often a process waiting on the Prefect API asks again: for a taken lock (sooner when the "
            "server says so), or `approve` for a promotion about to pause."
        ),
    )
    approve_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="How long `flexlock-prefect approve` waits for a promotion still running its checks to pause.",
    )
    approval_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="How long a promotion waits for a reviewer before it is rejected (the CLI's `--timeout` default).",
    )
    approval_poll_interval_s: int = Field(
        default=10,
        ge=1,
        le=600,
        description="How often a paused promotion checks for the reviewer's answer.",
    )
    demo_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long `flexlock-prefect demo` waits for its deployments to be served, and for the diag run.",
    )

    # Credentials.
    mlflow_credentials_block: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The Prefect `Secret` block whose JSON value ({username, password} or {token}) gives flexlock's "
            "flows their MLflow credentials when their environment has none (`credentials.py`)."
        ),
    )

    # Sweeps.
    sweep_max_parallel: int = Field(
        default=2,
        ge=1,
        le=64,
        description=(
            "Trials a sweep runs at once (`--max-parallel` default): subflows in threads of the sweep's "
            "process, or flow runs of a deployment that its workers share."
        ),
    )


def get_settings() -> FlexlockSettings:
    """The settings of the environment as it is now: tests and long-lived workers see every change.

    Building them costs about 5 ms (pydantic-settings reads and validates every field), and a
    relog asks for them several times, so the settings of one environment are built once: the
    `FLEXLOCK_*` variables and what the cache directory's default reads name them.

    Raises:
        SettingsError: a `FLEXLOCK_*` variable is out of bounds or of the wrong type; the
            message names the variable, the value's problem and the accepted range.
    """
    read_by_settings = tuple(
        sorted((name, value) for name, value in os.environ.items() if name.upper().startswith("FLEXLOCK_"))
    )
    return _settings_of(read_by_settings, os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))


@lru_cache(maxsize=32)
def _settings_of(
    variables: tuple[tuple[str, str], ...], xdg_cache_home: str | None, home: str | None
) -> FlexlockSettings:
    """The settings of one environment (the arguments only key the cache: they are read from it)."""
    try:
        return FlexlockSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FLEXLOCK_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise SettingsError(f"invalid flexlock-prefect setting ({problems}): fix or unset the variable") from None
