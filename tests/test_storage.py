"""The public `storage` API treats a plain path, a `file://` URL and an `s3://` URL alike."""

from __future__ import annotations

import doctest
import pickle
from pathlib import Path

import pytest

from flexlock_prefect import storage
from flexlock_prefect.exceptions import StorageError
from tests.helpers.http_peers import http_peer


def test_the_documented_examples_run() -> None:
    assert doctest.testmod(storage).failed == 0


@pytest.mark.parametrize("spell", [str, lambda p: f"file://{p}", Path])
def test_a_local_save_dir_reads_the_same_however_it_is_spelt(tmp_path: Path, spell) -> None:
    storage.write_atomic(tmp_path / "run" / "metrics.json", b"{}")
    where = spell(tmp_path / "run")
    assert storage.exists(storage.join(where, "metrics.json"))
    assert storage.ls(where) == ["metrics.json"]
    assert storage.read_text(storage.join(where, "metrics.json")) == "{}"
    with storage.open(storage.join(where, "metrics.json")) as handle:
        assert handle.read() == b"{}"


def test_missing_files_are_one_clear_error_naming_them(tmp_path: Path) -> None:
    for read in (storage.read_bytes, storage.ls, storage.open):
        with pytest.raises(StorageError, match="does not exist"):
            read(tmp_path / "absent")


@pytest.mark.integration
def test_an_s3_save_dir_reads_like_a_local_one(s3_bucket: str) -> None:
    storage.write_atomic(f"{s3_bucket}/run/metrics.json", b'{"acc": 1}')
    assert storage.ls(f"{s3_bucket}/run") == ["metrics.json"]
    assert storage.read_text(storage.join(f"{s3_bucket}/run", "metrics.json")) == '{"acc": 1}'
    with storage.open(f"{s3_bucket}/run/metrics.json") as handle:
        assert handle.read() == b'{"acc": 1}'


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


def test_an_s3_filesystem_pickles(aws_credentials: pytest.MonkeyPatch) -> None:
    # fsspec pickles a filesystem as the arguments it was made with (task runners, processes):
    # the session class in its config must be importable by name.
    aws_credentials.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fs, _ = storage.filesystem("s3://bucket/run")
    assert pickle.loads(pickle.dumps(fs)).config_kwargs == fs.config_kwargs


@pytest.mark.timeout(60)  # without the fix the PUT waits for ever: fail instead of hanging the suite
def test_an_s3_upload_does_not_wait_for_a_100_continue_that_never_comes(aws_credentials: pytest.MonkeyPatch) -> None:
    # An endpoint (or proxy) that never answers `Expect: 100-continue` but takes the body and
    # answers it. aiohttp used to send only the headers and wait for the `100 Continue` with no
    # timeout armed: the faults campaign's S3 run that never ended, waiting on a run.lock PUT.
    with http_peer(answers=True) as peer:
        aws_credentials.setenv("AWS_ENDPOINT_URL", peer.url)
        storage.write_atomic("s3://bucket/run/run.lock", b"flexlock: 1\n")
    assert [body for _, body in peer.requests] == [b"flexlock: 1\n"]


@pytest.mark.timeout(60)
def test_an_s3_endpoint_that_takes_a_write_and_never_answers_is_a_storage_error(
    aws_credentials: pytest.MonkeyPatch,
) -> None:
    # The shortest bounds that keep this test quick: one botocore attempt, 1 s read timeout (s3fs
    # still retries the timeout 5 times).
    aws_credentials.setenv("AWS_MAX_ATTEMPTS", "1")
    aws_credentials.setitem(storage.S3_CONFIG, "read_timeout", 1)
    with http_peer(answers=False) as peer:
        aws_credentials.setenv("AWS_ENDPOINT_URL", peer.url)
        with pytest.raises(StorageError, match="cannot write s3://bucket/run/run.lock: Read timeout"):
            storage.write_atomic("s3://bucket/run/run.lock", b"flexlock: 1\n")
    assert {body for _, body in peer.requests} == {b"flexlock: 1\n"}  # the body went out every time
