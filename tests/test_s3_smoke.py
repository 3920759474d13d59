import pytest

from flexlock_prefect import storage

pytestmark = pytest.mark.integration


def test_atomic_write_then_read_round_trips_on_s3(s3_bucket: str) -> None:
    url = storage.join(s3_bucket, "runs/a/run.lock")
    storage.write_atomic(url, b"hello")
    assert storage.read_bytes(url) == b"hello"
