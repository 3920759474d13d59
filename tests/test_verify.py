"""`verify_lock`: does a run's record still match the world? Data is re-hashed from the bytes
(never trusted from the stat cache), code objects are looked up, the file's digest is compared
with the one MLflow or Prefect recorded. Every problem is a `Mismatch`, never an exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from flexlock_prefect.capture.data import hash_data
from flexlock_prefect.capture.statcache import CacheEntry, open_cache
from flexlock_prefect.lock import RunLock
from flexlock_prefect.settings import FlexlockSettings
from flexlock_prefect.verify import Mismatch, verify_lock
from tests.helpers.fakes import repo_state


@pytest.fixture
def settings(tmp_path: Path) -> FlexlockSettings:
    return FlexlockSettings(cache_dir=tmp_path / "cache")


def _run(tmp_path: Path, settings: FlexlockSettings, data: Path, name: str = "run") -> RunLock:
    """Capture a run reading `data`, save its run.lock and load it back, as `verify` would."""
    config = {"lr": 0.1, "input_data": str(data), "save_dir": str(tmp_path / name)}
    _, lock = capture_run(config, data=["input_data"], repos={}, settings=settings)
    lock.save()
    return RunLock.load(str(tmp_path / name))


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "points.csv"
    path.write_text("x,y\n1,2\n")
    return path


def test_an_untouched_run_verifies_with_no_mismatch(tmp_path: Path, settings: FlexlockSettings, data_file) -> None:
    lock = _run(tmp_path, settings, data_file)
    assert verify_lock(lock, settings=settings) == []
    assert verify_lock(lock, expected_digest=lock.digest, settings=settings) == []


def test_changed_data_is_named_with_both_digests_and_the_sizes(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    data_file.write_text("x,y\n1,2\n3,4\n")
    [mismatch] = verify_lock(lock, settings=settings)
    recorded = lock.data["input_data"]
    assert mismatch.what == "data input_data"
    assert mismatch.detail.startswith(f"{recorded.uri} changed: digest {recorded.digest} is now ")
    assert mismatch.detail.endswith("(1 → 1 files, 8 → 12 bytes)")


def test_a_file_added_to_a_data_directory_is_a_mismatch(tmp_path: Path, settings: FlexlockSettings) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"a")
    lock = _run(tmp_path, settings, folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "b.png").write_bytes(b"bb")
    [mismatch] = verify_lock(lock, settings=settings)
    assert mismatch.what == "data input_data" and "(1 → 2 files, 1 → 3 bytes)" in mismatch.detail


def test_missing_data_is_a_mismatch_naming_the_path_not_an_exception(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    data_file.unlink()
    [mismatch] = verify_lock(lock, settings=settings)
    assert mismatch.what == "data input_data"
    assert str(data_file) in mismatch.detail and "does not exist" in mismatch.detail


def test_data_is_rehashed_even_when_the_stat_cache_vouches_for_other_bytes(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    recorded = lock.data["input_data"]
    # The bytes change and the cache is made to hold the recorded digest for the new stat:
    # a check that trusted the cache would call the changed file unchanged.
    data_file.write_text("x,y\n6,6\n")
    st = os.stat(data_file)
    checksum = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    cache = open_cache(settings.cache_dir)
    cache.set_many(recorded.algorithm, {str(data_file): CacheEntry(checksum, st.st_size, recorded.digest)})
    assert hash_data(str(data_file), settings=settings).digest == recorded.digest  # a capture believes it
    [mismatch] = verify_lock(lock, settings=settings)
    assert mismatch.what == "data input_data" and "changed" in mismatch.detail


def test_data_is_rehashed_with_the_algorithm_it_was_recorded_with(tmp_path: Path, data_file: Path) -> None:
    sha256 = FlexlockSettings(cache_dir=tmp_path / "cache", hash_algorithm="sha256")
    lock = _run(tmp_path, sha256, data_file)
    assert lock.data["input_data"].algorithm == "sha256"
    default = FlexlockSettings(cache_dir=tmp_path / "cache")
    assert default.hash_algorithm != "sha256"
    assert verify_lock(lock, settings=default) == []
    data_file.write_text("changed\n")
    assert [m.what for m in verify_lock(lock, settings=default)] == ["data input_data"]


def test_an_unknown_hash_algorithm_is_a_mismatch(tmp_path: Path, settings: FlexlockSettings, data_file: Path) -> None:
    lock = _run(tmp_path, settings, data_file)
    recorded = lock.data["input_data"]
    lock = lock.model_copy(update={"data": {"input_data": recorded.model_copy(update={"algorithm": "md5"})}})
    assert verify_lock(lock, settings=settings) == [
        Mismatch("data input_data", "recorded with unknown algorithm 'md5'")
    ]


def test_a_digest_other_than_the_expected_one_is_a_run_lock_mismatch(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    expected = "0" * 64
    assert verify_lock(lock, expected_digest=expected, settings=settings) == [
        Mismatch("run.lock", f"digest {lock.digest} differs from the expected {expected}")
    ]


def test_a_lock_edited_after_it_was_recorded_no_longer_has_the_recorded_digest(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    recorded_digest = lock.digest
    edited = lock.model_copy(update={"created_at": "2020-01-01T00:00:00.000Z"})
    assert [m.what for m in verify_lock(edited, expected_digest=recorded_digest, settings=settings)] == ["run.lock"]


def test_a_code_repository_that_is_gone_is_a_code_mismatch(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    lock = _run(tmp_path, settings, data_file)
    gone = tmp_path / "deleted-project"
    lock = lock.model_copy(update={"repos": {"code": repo_state("a" * 40, gone)}})
    assert verify_lock(lock, settings=settings) == [Mismatch("code code", f"no git repository at {gone}")]


def test_every_problem_is_reported_not_only_the_first(
    tmp_path: Path, settings: FlexlockSettings, data_file: Path
) -> None:
    other = tmp_path / "labels.csv"
    other.write_text("label\n1\n")
    config = {"a": str(data_file), "b": str(other), "save_dir": str(tmp_path / "run")}
    _, lock = capture_run(config, data=["a", "b"], repos={}, settings=settings)
    data_file.write_text("changed\n")
    other.unlink()
    lock = lock.model_copy(update={"repos": {"code": repo_state("a" * 40, tmp_path / "gone")}})
    mismatches = verify_lock(lock, expected_digest="0" * 64, settings=settings)
    assert [m.what for m in mismatches] == ["data a", "data b", "code code", "run.lock"]


def test_a_mismatch_reads_as_one_line_what_then_detail() -> None:
    assert str(Mismatch("data input_data", "digest 1 is now 2")) == "data input_data: digest 1 is now 2"
