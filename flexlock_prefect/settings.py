"""Every knob of flexlock-prefect in one place, read from `FLEXLOCK_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

HashAlgorithm = Literal["xxh3-128-tree", "sha256"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flexlock-prefect"


class FlexlockSettings(BaseSettings):
    """Settings of the capture layer.

    Example:
        `FLEXLOCK_HASH_ALGORITHM=sha256 flexlock-prefect verify runs/a` re-hashes with SHA-256.
    """

    model_config = SettingsConfigDict(env_prefix="FLEXLOCK_", extra="ignore")

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


def get_settings() -> FlexlockSettings:
    """Read the settings afresh, so that tests and long-lived workers see environment changes."""
    return FlexlockSettings()
