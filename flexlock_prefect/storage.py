"""save_dirs and data, local or on S3, through one small API over fsspec.

Public, for the user's flows and diag bodies, which get a save_dir as a plain local path or as
an `s3://` URL and can treat both alike: `join`, `exists`, `ls`, `open`, `read_bytes`,
`read_text`, `write_atomic`, and `canonical_url` (the one name of a location). Every function
takes a local path, a `file://` URL or an `s3://` URL.

The S3 endpoint comes from the standard variables (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
then MLflow's `MLFLOW_S3_ENDPOINT_URL`), credentials from the usual AWS chain; none of them is
ever part of a URL that flexlock-prefect records. Every S3 request is bounded in time (see
`S3_CONFIG`): an unreachable endpoint is a `StorageError`, never a wait without end.

Example:
    >>> import tempfile
    >>> save_dir = tempfile.mkdtemp()
    >>> write_atomic(join(save_dir, "metrics.json"), b'{"acc": 0.9}')
    >>> exists(join(save_dir, "metrics.json")), ls(save_dir)
    (True, ['metrics.json'])
    >>> read_text(join(save_dir, "metrics.json"))
    '{"acc": 0.9}'
    >>> with open(join(save_dir, "metrics.json")) as handle:
    ...     handle.read(8)
    b'{"acc": '
"""

from __future__ import annotations

import inspect
import os
import posixpath
import tempfile
from functools import cache
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

from flexlock_prefect.exceptions import StorageError, StorageNotFound
from flexlock_prefect.redact import strip_url_credentials

_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")

S3_CONFIG = {"connect_timeout": 5, "read_timeout": 15}
"""The botocore client config (s3fs `config_kwargs`) of every S3 filesystem, so that a request to
an endpoint that is down, or that took a request and went silent, ends in an error:

- `connect_timeout` 5 s: a TCP connection not set up by then is an error (s3fs's default).
- `read_timeout` 15 s: the longest silence while waiting for a response, or between two of its
  chunks (s3fs's default). aiohttp arms it once the request body is sent;
  `_s3session.NoContinueSession` removes the one wait before that which nothing bounded.

Retries stay botocore's, set by the standard `AWS_RETRY_MODE` / `AWS_MAX_ATTEMPTS` (default:
legacy mode, 5 attempts per call, backoff of at most 1, 2, 4, 8 s between them); s3fs retries
read timeouts and dropped connections up to 5 times on top, refused connections not. So an
endpoint that refuses or resets connections is a `StorageError` within about 15 s, one that
does not answer connections within about 40 s, and one that accepts requests and never
answers within about 5 × 5 × 15 s ≈ 7 minutes (`AWS_MAX_ATTEMPTS=2`: about 3 minutes).
"""


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def canonical_url(location: str | os.PathLike[str]) -> str:
    """The one name of a save_dir or data path: `file:///abs/path` or `s3://bucket/key`.

    Local paths are made absolute and symlinks resolved, so two spellings of one directory name
    one logical run; the path is not percent-encoded (fsspec reads it back as it is). Remote URLs
    lose credentials, duplicate and trailing slashes.

    Example:
        >>> canonical_url("s3://bucket//runs/a/")
        's3://bucket/runs/a'
    """
    text = os.fspath(location)
    if not text:
        raise StorageError("empty path: give a local directory or an s3:// URL")
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    if not is_remote(text):
        return "file://" + Path(text).expanduser().resolve().as_posix()
    scheme, rest = text.split("://", 1)
    if scheme not in {"s3", "s3a"}:
        raise StorageError(
            f"unsupported URL scheme {scheme!r} in {strip_url_credentials(text)}: use a local path or s3://"
        )
    rest = strip_url_credentials(f"s3://{rest}").removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    key = posixpath.normpath("/" + key).strip("/") if key else ""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def local_path(url: str) -> Path | None:
    """The local path of a canonical `file://` URL, or None for a remote one."""
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


@cache
def unreadable() -> tuple[type[Exception], ...]:
    """What a filesystem raises when it cannot reach or read a location: OSError and ValueError,
    and botocore's errors (an unreachable endpoint, bad credentials), which s3fs passes through."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, BotoCoreError)


@cache
def _session_class() -> type | None:
    """`_s3session.NoContinueSession`, or None with an aiobotocore too old to take a session class
    in its config (`AioConfig(http_session_cls=...)`)."""
    from aiobotocore.config import AioConfig

    if "http_session_cls" not in inspect.signature(AioConfig.__init__).parameters:
        return None
    from flexlock_prefect._s3session import NoContinueSession

    return NoContinueSession


def _s3_config_kwargs() -> dict[str, Any]:
    """`S3_CONFIG`, with the session class that bounds uploads too, for `s3fs.S3FileSystem`."""
    session = _session_class()
    return {**S3_CONFIG, "http_session_cls": session} if session else dict(S3_CONFIG)


def filesystem(location: str | os.PathLike[str]) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it for a location (path or URL).

    S3 listings are not cached: a capture must see a file written a moment ago. S3 requests
    are bounded in time (`S3_CONFIG`).
    """
    url = os.fspath(location)
    if not url.startswith(("file://", "s3://")):
        url = canonical_url(url)
    if url.startswith("file://"):
        return fsspec.filesystem("file"), url.removeprefix("file://")
    if url.startswith("s3://"):
        endpoint = next((os.environ[v] for v in _ENDPOINT_VARIABLES if os.environ.get(v)), None)
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        fs = fsspec.filesystem(
            "s3", client_kwargs=client_kwargs, config_kwargs=_s3_config_kwargs(), use_listings_cache=False
        )
        return fs, url.removeprefix("s3://")
    raise StorageError(f"not a canonical URL: {url!r}")


def join(url: str | os.PathLike[str], *names: str) -> str:
    """`url` with `names` appended, `/`-separated (a local path stays a path)."""
    return posixpath.join(os.fspath(url), *names)


def exists(url: str | os.PathLike[str]) -> bool:
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except unreadable() as exc:
        raise StorageError(f"cannot reach {url}: {exc}") from exc


def ls(url: str | os.PathLike[str]) -> list[str]:
    """The names of the entries of a directory, sorted (files and subdirectories)."""
    fs, path = filesystem(url)
    try:
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    except FileNotFoundError as exc:
        raise StorageNotFound(f"{url} does not exist") from exc
    except unreadable() as exc:
        raise StorageError(f"cannot list {url}: {exc}") from exc


def open(url: str | os.PathLike[str], mode: str = "rb") -> IO[bytes]:  # noqa: A001 - the storage verb
    """A file object for reading (`rb`) or writing (`wb`); use it in a `with` block."""
    fs, path = filesystem(url)
    try:
        return fs.open(path, mode)
    except FileNotFoundError as exc:
        raise StorageNotFound(f"{url} does not exist") from exc
    except unreadable() as exc:
        raise StorageError(f"cannot open {url}: {exc}") from exc


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    """The content of a file; StorageError naming the URL when it is missing or unreadable."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise StorageNotFound(f"{url} does not exist") from exc
    except unreadable() as exc:
        raise StorageError(f"cannot read {url}: {exc}") from exc


def read_text(url: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    return read_bytes(url).decode(encoding)


def write_atomic(url: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at `url` with `data` so that readers see the old or the new, never a part.

    Locally: a temporary file in the same directory, fsync, `os.replace`, fsync of the directory.
    On S3 one PUT is atomic by itself: an object is visible only once fully uploaded.
    """
    url = os.fspath(url)
    target = local_path(url if is_remote(url) else canonical_url(url))
    if target is None:
        fs, path = filesystem(url)
        try:
            fs.pipe_file(path, data)
        except unreadable() as exc:
            raise StorageError(f"cannot write {url}: {exc}") from exc
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {url}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {url}: {exc}") from exc
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable across a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
