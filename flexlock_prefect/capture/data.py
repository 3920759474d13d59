"""Content digests of data inputs: files and directories, local or `s3://`, with a stat cache.

A file's digest is its content hash (see `hashing`). A directory's digest is the hash of its
manifest, one line `relative/path NUL size NUL digest LF` per regular file in path order, so any
change to content, a rename or a moved file changes it; empty directories do not count. Symlinks
to files are read through; symlinked directories and special files (FIFOs, sockets) are skipped.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from typing import NamedTuple, Protocol

import xxhash
from omegaconf import DictConfig, OmegaConf

from flexlock_prefect import storage
from flexlock_prefect.capture.facet import Capture, Facet, ProgressFactory
from flexlock_prefect.capture.hashing import Algorithm, ReadRange, get_algorithm, read_local_range
from flexlock_prefect.capture.statcache import CacheEntry, DigestCache, open_cache
from flexlock_prefect.exceptions import ConfigError, DataCaptureError, StorageError
from flexlock_prefect.lock import DataState
from flexlock_prefect.settings import FlexlockSettings, get_settings

SMALL_FILE_LIMIT = 1024**2
"""Files up to this size are read whole in one call; larger ones in chunks, block by block."""

RACY_WINDOW_NS = 2_000_000_000
"""Files modified this recently are hashed but not cached: a write in the same timestamp tick
could otherwise leave size and mtime unchanged (the "racy git" problem)."""


class FileStat(NamedTuple):
    """What a listing knows of one file; a tuple because unchanged trees list 10,000s of them."""

    relpath: str
    location: str
    size: int
    checksum: str
    cacheable: bool


class _Source(Protocol):
    url: str
    min_workers: int

    def listing(self) -> tuple[bool, list[FileStat]]: ...
    def read_whole(self, file: FileStat) -> bytes: ...
    def reader(self, file: FileStat) -> ReadRange: ...
    def cache_key(self, file: FileStat) -> str: ...


def _local_file_stat(relpath: str, path: str, st: os.stat_result, settled_before: int) -> FileStat:
    return FileStat(
        relpath,
        path,
        st.st_size,
        f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}",
        st.st_mtime_ns < settled_before and st.st_ctime_ns < settled_before,
    )


class _LocalSource:
    min_workers = 1

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = storage.local_path(url)

    def listing(self) -> tuple[bool, list[FileStat]]:
        settled_before = time.time_ns() - RACY_WINDOW_NS
        try:
            root_stat = os.stat(self.root)
        except FileNotFoundError as exc:
            raise DataCaptureError(f"data path {self.root} does not exist: check the path in the config") from exc
        except OSError as exc:
            raise DataCaptureError(f"data path {self.root} cannot be read: {exc.strerror}") from exc
        if not stat.S_ISDIR(root_stat.st_mode):
            return False, [_local_file_stat("", str(self.root), root_stat, settled_before)]
        files: list[FileStat] = []
        pending = [("", str(self.root))]
        is_regular = stat.S_ISREG
        while pending:  # the hot loop of every re-capture: one stat per file, little else
            prefix, directory = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((f"{prefix}{entry.name}/", entry.path))
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # a dangling symlink or a file deleted meanwhile
                        continue
                    if is_regular(st.st_mode):
                        files.append(_local_file_stat(prefix + entry.name, entry.path, st, settled_before))
        files.sort()  # by relpath: relpaths are unique, so later fields never decide
        return True, files

    def read_whole(self, file: FileStat) -> bytes:
        with open(file.location, "rb", buffering=0) as handle:
            return handle.read()

    def reader(self, file: FileStat) -> ReadRange:
        return read_local_range(file.location)

    def cache_key(self, file: FileStat) -> str:
        return file.location


class _S3Source:
    min_workers = 8  # every object is a network round trip: keep several in flight
    _piece = 8 * 1024**2

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = storage.filesystem(url)

    def listing(self) -> tuple[bool, list[FileStat]]:
        try:
            info = self.fs.info(self.root)
            if info["type"] != "directory":
                return False, [self._file_stat("", info)]
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError as exc:
            raise DataCaptureError(f"data path {self.url} does not exist") from exc
        except storage.unreadable() as exc:
            raise DataCaptureError(f"cannot list data path {self.url}: {exc}") from exc
        prefix = self.root.rstrip("/") + "/"
        files = [
            self._file_stat(name.removeprefix(prefix), meta)
            for name, meta in found.items()
            if meta["type"] == "file" and not name.endswith("/")
        ]
        files.sort(key=lambda f: f.relpath)
        return True, files

    @staticmethod
    def _file_stat(relpath: str, meta: dict) -> FileStat:
        etag = str(meta.get("ETag", "")).strip('"')
        checksum = f"{etag}:{meta.get('VersionId') or ''}:{meta['size']}"
        return FileStat(relpath, meta["name"], int(meta["size"]), checksum, cacheable=bool(etag))

    def read_whole(self, file: FileStat) -> bytes:
        return self.fs.cat_file(file.location)

    def reader(self, file: FileStat) -> ReadRange:
        def read(offset: int, length: int) -> Iterator[bytes]:
            for start in range(offset, offset + length, self._piece):
                end = min(start + self._piece, offset + length)
                yield self.fs.cat_file(file.location, start=start, end=end)

        return read

    def cache_key(self, file: FileStat) -> str:
        return "s3://" + file.location


def _source(url: str) -> _Source:
    return _S3Source(url) if url.startswith("s3://") else _LocalSource(url)


def data_inputs(config: DictConfig, keys: Sequence[str]) -> dict[str, str]:
    """Config key → the path or URL it holds, for the keys that name data inputs."""
    inputs = {}
    for key in keys:
        value = OmegaConf.select(config, key, default=None)
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ConfigError(
                f"data input `{key}` must be a config key holding a path or s3:// URL, found {value!r}: "
                f"add `{key}: path/to/data` to the config or fix the name in `data=[...]`"
            )
        inputs[key] = os.fspath(value)
    return inputs


def _collect(capture: Capture) -> None:
    request = capture.request
    inputs = data_inputs(capture.config, request.data)
    capture.sections["data"] = capture_data(inputs, settings=request.settings, progress=request.progress)


FACET = Facet("capture-data", _collect, retries=2)
"""Digests of the config's data inputs, local or on S3 (retried: S3 reads may fail in passing)."""


def capture_data(
    inputs: Mapping[str, str],
    *,
    settings: FlexlockSettings | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, DataState]:
    """Digest every named data input (name → local path or s3:// URL)."""
    settings = settings or get_settings()
    cache = open_cache(settings.cache_dir, settings.stat_cache)
    return {name: hash_data(uri, settings=settings, cache=cache, progress=progress) for name, uri in inputs.items()}


def hash_data(
    uri: str,
    *,
    settings: FlexlockSettings | None = None,
    cache: DigestCache | None = None,
    progress: ProgressFactory | None = None,
) -> DataState:
    """The digest, size and file count of one file or directory.

    Example:
        >>> hash_data("data/iris.csv").digest  # doctest: +SKIP
        '5c0f...'
    """
    settings = settings or get_settings()
    cache = cache if cache is not None else open_cache(settings.cache_dir, settings.stat_cache)
    algorithm = get_algorithm(settings.hash_algorithm)
    source = _source(_data_url(uri))
    is_dir, files = source.listing()
    size = sum(f.size for f in files)

    dir_key, dir_checksum = f"dir:{source.url}", _listing_checksum(files)
    if is_dir and (hit := cache.get_many(algorithm.name, {dir_key: dir_checksum}).get(dir_key)):
        return DataState(uri=source.url, algorithm=algorithm.name, digest=hit.digest, size=hit.size, files=len(files))

    digests = _cached_digests(files, source, algorithm, settings, cache, progress)
    if not is_dir:
        return DataState(uri=source.url, algorithm=algorithm.name, digest=digests[""], size=size, files=1)
    manifest = "".join(f"{f.relpath}\0{f.size}\0{digests[f.relpath]}\n" for f in files)
    digest = algorithm.digest_bytes(manifest.encode("utf-8", "surrogateescape"))
    if all(f.cacheable for f in files):
        cache.set_many(algorithm.name, {dir_key: CacheEntry(dir_checksum, size, digest)})
    return DataState(uri=source.url, algorithm=algorithm.name, digest=digest, size=size, files=len(files))


def file_digests(
    uri: str,
    *,
    exclude: Callable[[str], bool] = lambda relpath: False,
    settings: FlexlockSettings | None = None,
) -> dict[str, str]:
    """Relative path → `algorithm:digest` of every file under `uri`, e.g. the outputs of a run."""
    settings = settings or get_settings()
    cache = open_cache(settings.cache_dir, settings.stat_cache)
    algorithm = get_algorithm(settings.hash_algorithm)
    source = _source(_data_url(uri))
    _, files = source.listing()
    files = [f for f in files if not exclude(f.relpath)]
    digests = _cached_digests(files, source, algorithm, settings, cache, None)
    return {f.relpath: f"{algorithm.name}:{digests[f.relpath]}" for f in files}


def _data_url(uri: str) -> str:
    try:
        return storage.canonical_url(uri)
    except StorageError as exc:
        raise DataCaptureError(f"data path {uri!r}: {exc}") from exc


def _cached_digests(
    files: list[FileStat],
    source: _Source,
    algorithm: Algorithm,
    settings: FlexlockSettings,
    cache: DigestCache,
    progress: ProgressFactory | None,
) -> dict[str, str]:
    """Digests of `files`: from the stat cache where still valid, else hashed and cached."""
    keys = {source.cache_key(f): f for f in files}
    hits = cache.get_many(algorithm.name, {key: f.checksum for key, f in keys.items()})
    digests = {f.relpath: hits[key].digest for key, f in keys.items() if key in hits}
    misses = [f for key, f in keys.items() if key not in hits]
    try:
        digests |= _hash_files(misses, source, algorithm, settings, progress or terminal_progress(settings))
    except storage.unreadable() as exc:  # an S3 endpoint gone while hashing is botocore's error, not an OSError
        raise DataCaptureError(f"cannot read data under {source.url}: {exc}") from exc
    cache.set_many(
        algorithm.name,
        {source.cache_key(f): CacheEntry(f.checksum, f.size, digests[f.relpath]) for f in misses if f.cacheable},
    )
    return digests


def _listing_checksum(files: list[FileStat]) -> str:
    listing = "".join(f"{f.relpath}\0{f.checksum}\n" for f in files)
    return xxhash.xxh3_128(listing.encode("utf-8", "surrogateescape")).hexdigest()


def _hash_files(
    files: list[FileStat],
    source: _Source,
    algorithm: Algorithm,
    settings: FlexlockSettings,
    progress: ProgressFactory,
) -> dict[str, str]:
    """Digests of `files` on a thread pool: small files whole, in batches; large ones block by block.

    Batches keep the pool's overhead per file low (one future per file costs more than hashing a
    small file), while several threads overlap reads with hashing and keep reads in flight.
    """
    total = sum(f.size for f in files)
    workers = max(settings.hash_workers, source.min_workers)
    small = [f for f in files if f.size <= SMALL_FILE_LIMIT]
    batch_size = max(1, min(256, len(small) // (workers * 4)))

    def hash_small(batch: list[FileStat], advance: Callable[[int], None]) -> list[str]:
        digests = []
        for f in batch:
            content = source.read_whole(f)
            if len(content) != f.size:
                raise OSError(f"{f.location} changed while it was being hashed")
            digests.append(algorithm.digest_bytes(content))
            advance(f.size)
        return digests

    with progress(f"hashing {source.url}", total) as advance, ThreadPoolExecutor(workers) as pool:
        batches = [small[i : i + batch_size] for i in range(0, len(small), batch_size)]
        # Tasks run in copies of the caller's context, so a Prefect progress reporter in `advance`
        # talks to the caller's API.
        small_futures = [(batch, pool.submit(copy_context().run, hash_small, batch, advance)) for batch in batches]
        large_futures = {
            f.relpath: [
                pool.submit(copy_context().run, algorithm.hash_range, source.reader(f), start, length, advance)
                for start, length in algorithm.blocks(f.size)
            ]
            for f in files
            if f.size > SMALL_FILE_LIMIT
        }
        digests = {
            f.relpath: digest
            for batch, future in small_futures
            for f, digest in zip(batch, future.result(), strict=True)
        }
        for relpath, blocks in large_futures.items():
            digests[relpath] = algorithm.combine([block.result() for block in blocks])
    return digests


def terminal_progress(settings: FlexlockSettings) -> ProgressFactory:
    """A rich progress bar on stderr when it is a terminal and the work is large enough."""

    @contextmanager
    def factory(description: str, total: int) -> Iterator[Callable[[int], None]]:
        if total < settings.progress_min_bytes or not sys.stderr.isatty():
            yield lambda _: None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress(
            "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    return factory
