"""A cache of data digests keyed by what the filesystem says about a file, checked on every read.

An entry is `(key, algorithm) → (checksum, size, digest)` where `checksum` condenses the stat
facts that change whenever content can have changed (local: inode, size, mtime_ns, ctime_ns; S3:
ETag or version id, and size). A lookup whose checksum differs is a miss and is overwritten
later. Directory entries use the checksum of the whole sorted stat listing, so an unchanged tree
costs one stat per file and a single lookup. When caching is off, `NullStatCache` keeps callers
free of branches.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    key TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    checksum TEXT NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (key, algorithm)
) WITHOUT ROWID
"""
_BATCH = 500  # well under SQLite's limit of bound parameters per statement


class CacheEntry(NamedTuple):
    checksum: str
    size: int
    digest: str


class DigestCache(Protocol):
    def get_many(self, algorithm: str, checksums: Mapping[str, str]) -> dict[str, CacheEntry]:
        """Valid entries for `key → current checksum`; stale or absent keys are left out."""

    def set_many(self, algorithm: str, entries: Mapping[str, CacheEntry]) -> None: ...


class NullStatCache:
    """The cache when caching is off: never hits, stores nothing."""

    def get_many(self, algorithm: str, checksums: Mapping[str, str]) -> dict[str, CacheEntry]:
        return {}

    def set_many(self, algorithm: str, entries: Mapping[str, CacheEntry]) -> None:
        return None


class StatCache:
    """SQLite-backed digest cache, safe to share between threads and processes.

    Example:
        >>> cache = StatCache(Path("/tmp/cache.sqlite"))  # doctest: +SKIP
        >>> cache.set_many("sha256", {"/data/a": CacheEntry("1:2:3:4", 10, "ab..")})  # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._local.conn = conn
        return conn

    def get_many(self, algorithm: str, checksums: Mapping[str, str]) -> dict[str, CacheEntry]:
        keys = list(checksums)
        found: dict[str, CacheEntry] = {}
        conn = self._connection()
        for start in range(0, len(keys), _BATCH):
            batch = keys[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = conn.execute(
                f"SELECT key, checksum, size, digest FROM digests WHERE algorithm = ? AND key IN ({marks})",
                [algorithm, *batch],
            )
            for key, checksum, size, digest in rows:
                if checksum == checksums[key]:
                    found[key] = CacheEntry(checksum, size, digest)
        return found

    def set_many(self, algorithm: str, entries: Mapping[str, CacheEntry]) -> None:
        if not entries:
            return
        conn = self._connection()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO digests (key, algorithm, checksum, size, digest) VALUES (?, ?, ?, ?, ?)",
                ((key, algorithm, *entry) for key, entry in entries.items()),
            )


def open_cache(cache_dir: Path | None, enabled: bool = True) -> DigestCache:
    """The stat cache under `cache_dir`, or the no-op cache when disabled."""
    if not enabled or cache_dir is None:
        return NullStatCache()
    return StatCache(Path(cache_dir) / "digests-v1.sqlite")
