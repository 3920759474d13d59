"""Data capture: content digests of files and trees, and a stat cache that never hides a change."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import xxhash

from flexlock_prefect.capture import data as data_module
from flexlock_prefect.capture import hashing
from flexlock_prefect.capture.data import RACY_WINDOW_NS, hash_data
from flexlock_prefect.capture.hashing import Algorithm, get_algorithm
from flexlock_prefect.exceptions import DataCaptureError
from flexlock_prefect.settings import FlexlockSettings


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture(autouse=True)
def settled_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by a test count as settled (ctime cannot be backdated); the racy test puts
    the window back itself."""
    monkeypatch.setattr(data_module, "RACY_WINDOW_NS", 0)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every piece of file content actually read: whole small files and blocks of large ones."""
    seen: list[int] = []
    hash_range = Algorithm.hash_range

    def spy_range(self, read, offset, length, on_bytes):
        seen.append(length)
        return hash_range(self, read, offset, length, on_bytes)

    monkeypatch.setattr(Algorithm, "hash_range", spy_range)
    for source in (data_module._LocalSource, data_module._S3Source):
        read_whole = source.read_whole

        def spy_whole(self, file, read_whole=read_whole):
            content = read_whole(self, file)
            seen.append(len(content))
            return content

        monkeypatch.setattr(source, "read_whole", spy_whole)
    return seen


def test_a_small_file_has_its_plain_xxh3_128_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"hello world")
    state = hash_data(str(path))
    assert state.algorithm == "xxh3-128-tree"
    assert state.digest == xxhash.xxh3_128(b"hello world").hexdigest()
    assert (state.size, state.files, state.uri) == (11, 1, f"file://{path}")


def test_sha256_is_available_for_tamper_resistance(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 3000)
    state = hash_data(str(path), settings=FlexlockSettings(hash_algorithm="sha256"))
    assert (state.algorithm, state.digest) == ("sha256", hashlib.sha256(b"x" * 3000).hexdigest())


def test_large_files_hash_as_a_tree_of_blocks_independent_of_thread_count(tmp_path: Path) -> None:
    tree = Algorithm("xxh3-128-tree", xxhash.xxh3_128, block_size=1024)
    data = os.urandom(5000)
    read = lambda offset, length: iter((data[offset : offset + length],))  # noqa: E731
    blocks = [tree.hash_range(read, o, n, lambda _: None) for o, n in tree.blocks(len(data))]
    assert [n for _, n in tree.blocks(len(data))] == [1024, 1024, 1024, 1024, 904]
    expected = xxhash.xxh3_128(b"".join(xxhash.xxh3_128(data[o : o + 1024]).digest() for o in range(0, 5000, 1024)))
    assert tree.combine(blocks) == expected.hexdigest() == tree.digest_bytes(data)


def test_a_file_digest_does_not_depend_on_the_number_of_hash_workers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(hashing.ALGORITHMS, "xxh3-128-tree", Algorithm("xxh3-128-tree", xxhash.xxh3_128, 4096))
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(100_000))
    digests = {
        hash_data(str(path), settings=FlexlockSettings(stat_cache=False, hash_workers=w)).digest for w in (1, 2, 7)
    }
    assert len(digests) == 1
    assert digests != {xxhash.xxh3_128(path.read_bytes()).hexdigest()}


def test_directory_digest_covers_paths_sizes_and_contents(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a.txt": b"a", "sub/b.txt": b"bb", "sub/deep/c.txt": b"ccc"})
    state = hash_data(str(root))
    assert (state.files, state.size) == (3, 6)
    manifest = "".join(
        f"{rel}\0{len(c)}\0{xxhash.xxh3_128(c).hexdigest()}\n"
        for rel, c in [("a.txt", b"a"), ("sub/b.txt", b"bb"), ("sub/deep/c.txt", b"ccc")]
    )
    assert state.digest == xxhash.xxh3_128(manifest.encode()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "sub/deep/c.txt").write_bytes(b"CCC"),
        lambda root: (root / "sub/deep/c.txt").rename(root / "sub/deep/d.txt"),
        lambda root: (root / "sub/b.txt").rename(root / "b.txt"),
        lambda root: (root / "new.txt").write_bytes(b""),
        lambda root: (root / "a.txt").unlink(),
    ],
    ids=["deep-content", "rename", "move", "new-empty-file", "delete"],
)
def test_any_change_however_deep_changes_the_directory_digest(tmp_path: Path, change) -> None:
    root = _tree(tmp_path / "d", {"a.txt": b"a", "sub/b.txt": b"bb", "sub/deep/c.txt": b"ccc"})
    before = hash_data(str(root)).digest
    change(root)
    assert hash_data(str(root)).digest != before


def test_unchanged_data_is_recaptured_from_the_stat_cache_without_reading(tmp_path: Path, reads: list[int]) -> None:
    root = _tree(tmp_path / "d", {f"f{i}.bin": os.urandom(100) for i in range(50)})
    first = hash_data(str(root))
    assert len(reads) == 50
    reads.clear()
    assert hash_data(str(root)) == first
    assert reads == []


def test_only_changed_files_are_reread(tmp_path: Path, reads: list[int]) -> None:
    root = _tree(tmp_path / "d", {f"f{i}.bin": os.urandom(100) for i in range(20)})
    hash_data(str(root))
    (root / "f3.bin").write_bytes(os.urandom(100))
    reads.clear()
    hash_data(str(root))
    assert reads == [100]


def test_same_size_rewrite_with_restored_mtime_is_still_seen(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789")
    before = hash_data(str(path))
    stat = path.stat()
    path.write_bytes(b"9876543210")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only ctime moves
    assert hash_data(str(path)).digest != before.digest


def test_a_racy_file_written_just_now_is_hashed_but_not_trusted_from_cache(
    tmp_path: Path, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_module, "RACY_WINDOW_NS", RACY_WINDOW_NS)
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"abc")
    hash_data(str(path))
    hash_data(str(path))
    assert reads == [3, 3]
    later = time.time_ns() + RACY_WINDOW_NS + 1  # the file has settled by then
    monkeypatch.setattr(data_module, "time", SimpleNamespace(time_ns=lambda: later))
    hash_data(str(path))
    hash_data(str(path))
    assert reads == [3, 3, 3]  # settled now: cached by the third capture, trusted by the fourth


def test_cache_off_always_reads(tmp_path: Path, reads: list[int]) -> None:
    root = _tree(tmp_path / "d", {"a": b"1"})
    settings = FlexlockSettings(stat_cache=False)
    hash_data(str(root), settings=settings)
    hash_data(str(root), settings=settings)
    assert reads == [1, 1]


def test_symlinked_files_are_read_through_and_special_files_skipped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a.txt": b"a"})
    (root / "link.txt").symlink_to(root / "a.txt")
    os.mkfifo(root / "pipe")
    state = hash_data(str(root))
    assert state.files == 2


def test_empty_directory_has_a_digest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    state = hash_data(str(tmp_path / "empty"))
    assert (state.files, state.size, state.digest) == (0, 0, get_algorithm("xxh3-128-tree").digest_bytes(b""))


def test_a_missing_path_is_a_data_capture_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataCaptureError, match="nope.csv"):
        hash_data(str(tmp_path / "nope.csv"))


def test_progress_is_reported_in_bytes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": b"x" * 1000, "b": b"y" * 24})
    seen: list[int] = []

    from contextlib import contextmanager

    @contextmanager
    def progress(description: str, total: int):
        seen.append(total)
        yield seen.append

    hash_data(str(root), progress=progress)
    assert seen[0] == 1024 and sum(seen[1:]) == 1024


@pytest.mark.integration
def test_an_s3_tree_has_the_same_digest_as_the_same_files_on_disk(tmp_path: Path, s3_bucket: str) -> None:
    from flexlock_prefect import storage

    files = {"a.txt": b"a", "sub/b.bin": os.urandom(3000), "sub/deep/c.txt": b"ccc"}
    root = _tree(tmp_path / "d", files)
    fs, _ = storage.filesystem(s3_bucket)
    for rel, content in files.items():
        fs.pipe_file(f"{s3_bucket.removeprefix('s3://')}/data/{rel}", content)
    local, remote = hash_data(str(root)), hash_data(f"{s3_bucket}/data")
    assert (remote.digest, remote.files, remote.size) == (local.digest, local.files, local.size)
    assert remote.uri == f"{s3_bucket}/data"
    assert hash_data(f"{s3_bucket}/data/sub/b.bin").digest == xxhash.xxh3_128(files["sub/b.bin"]).hexdigest()


@pytest.mark.integration
def test_s3_recapture_uses_the_etag_cache_and_sees_a_changed_object(s3_bucket: str, reads: list[int]) -> None:
    from flexlock_prefect import storage

    fs, _ = storage.filesystem(s3_bucket)
    bucket = s3_bucket.removeprefix("s3://")
    for i in range(5):
        fs.pipe_file(f"{bucket}/data/f{i}", b"v1-%d" % i)
    first = hash_data(f"{s3_bucket}/data")
    reads.clear()
    assert hash_data(f"{s3_bucket}/data") == first
    assert reads == []
    fs.pipe_file(f"{bucket}/data/f2", b"v2-2")
    assert hash_data(f"{s3_bucket}/data").digest != first.digest
    assert reads == [4]
