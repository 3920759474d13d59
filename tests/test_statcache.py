"""The stat cache of data digests: an entry counts only while the file's checksum (its stat facts)
is unchanged, entries are per algorithm, it is shared between threads and processes, and when
caching is off a cache that never hits keeps callers free of branches."""

from __future__ import annotations

import threading
from pathlib import Path

from flexlock_prefect.capture.statcache import CacheEntry, NullStatCache, StatCache, open_cache

ALGORITHM = "xxh3-128-tree"


def _entry(checksum: str = "1:8:100:100", digest: str = "d1") -> CacheEntry:
    return CacheEntry(checksum=checksum, size=8, digest=digest)


def test_an_entry_is_found_while_the_checksum_is_unchanged(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many(ALGORITHM, {"/data/a": _entry()})
    assert cache.get_many(ALGORITHM, {"/data/a": "1:8:100:100"}) == {"/data/a": _entry()}


def test_an_entry_whose_checksum_changed_is_a_miss(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many(ALGORITHM, {"/data/a": _entry("1:8:100:100")})
    assert cache.get_many(ALGORITHM, {"/data/a": "1:8:101:101"}) == {}


def test_absent_keys_are_left_out_and_present_ones_returned(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many(ALGORITHM, {"/data/a": _entry(digest="da"), "/data/b": _entry(digest="db")})
    found = cache.get_many(ALGORITHM, {"/data/a": "1:8:100:100", "/data/b": "stale", "/data/c": "1:8:100:100"})
    assert found == {"/data/a": _entry(digest="da")}


def test_entries_of_one_algorithm_are_not_seen_by_another(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many("sha256", {"/data/a": _entry(digest="sha")})
    assert cache.get_many(ALGORITHM, {"/data/a": "1:8:100:100"}) == {}
    cache.set_many(ALGORITHM, {"/data/a": _entry(digest="xx")})
    assert cache.get_many("sha256", {"/data/a": "1:8:100:100"})["/data/a"].digest == "sha"
    assert cache.get_many(ALGORITHM, {"/data/a": "1:8:100:100"})["/data/a"].digest == "xx"


def test_a_new_entry_for_a_key_replaces_the_old_one(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many(ALGORITHM, {"/data/a": _entry("old", "d-old")})
    cache.set_many(ALGORITHM, {"/data/a": _entry("new", "d-new")})
    assert cache.get_many(ALGORITHM, {"/data/a": "old"}) == {}
    assert cache.get_many(ALGORITHM, {"/data/a": "new"}) == {"/data/a": _entry("new", "d-new")}


def test_thousands_of_keys_are_read_and_written_in_one_call_each(tmp_path: Path) -> None:
    # More keys than one SQL statement may bind: the cache batches them itself.
    cache = StatCache(tmp_path / "c.sqlite")
    entries = {f"/data/{i:05}": _entry(f"c{i}", f"d{i}") for i in range(2345)}
    cache.set_many(ALGORITHM, entries)
    found = cache.get_many(ALGORITHM, {key: entry.checksum for key, entry in entries.items()})
    assert found == entries


def test_writing_nothing_is_allowed_and_touches_no_file(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    cache.set_many(ALGORITHM, {})
    assert not (tmp_path / "c.sqlite").exists()
    assert cache.get_many(ALGORITHM, {}) == {}


def test_keys_may_hold_any_characters(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    keys = ["/data/with space", '/data/quote\'s "both"', "/data/ünïcödé-路径", "s3://bucket/a?b=c", "dir:file:///x"]
    cache.set_many(ALGORITHM, {key: _entry(digest=key) for key in keys})
    found = cache.get_many(ALGORITHM, dict.fromkeys(keys, "1:8:100:100"))
    assert {key: entry.digest for key, entry in found.items()} == {key: key for key in keys}


def test_entries_outlive_the_cache_object_that_wrote_them(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    StatCache(path).set_many(ALGORITHM, {"/data/a": _entry()})
    assert StatCache(path).get_many(ALGORITHM, {"/data/a": "1:8:100:100"}) == {"/data/a": _entry()}


def test_one_cache_is_shared_between_threads(tmp_path: Path) -> None:
    cache = StatCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            cache.set_many(ALGORITHM, {f"/data/{start + i}": _entry(digest=str(start + i)) for i in range(50)})
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found = cache.get_many(ALGORITHM, {f"/data/{i}": "1:8:100:100" for i in range(200)})
    assert len(found) == 200


def test_the_cache_file_and_its_directory_are_created_on_first_use(tmp_path: Path) -> None:
    cache = open_cache(tmp_path / "not" / "there" / "yet")
    assert isinstance(cache, StatCache)
    cache.set_many(ALGORITHM, {"/data/a": _entry()})
    assert (tmp_path / "not" / "there" / "yet" / "digests-v1.sqlite").is_file()


def test_with_caching_off_or_no_directory_the_cache_never_hits_and_stores_nothing(tmp_path: Path) -> None:
    for cache in (open_cache(tmp_path / "off", enabled=False), open_cache(None), NullStatCache()):
        assert isinstance(cache, NullStatCache)
        cache.set_many(ALGORITHM, {"/data/a": _entry()})
        assert cache.get_many(ALGORITHM, {"/data/a": "1:8:100:100"}) == {}
    assert not (tmp_path / "off").exists()
