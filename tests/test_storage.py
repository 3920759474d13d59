"""The public `storage` API treats a plain path, a `file://` URL and an `s3://` URL alike."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from flexlock_prefect import storage
from flexlock_prefect.exceptions import StorageError


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
