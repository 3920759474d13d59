"""Content digests of files, fast enough to run at the speed of the disk.

`xxh3-128-tree` (the default) splits a file into 64 MiB blocks, hashes the blocks with XXH3-128
on several threads and, for a file of more than one block, hashes the concatenated 16-byte block
digests again. A file of at most one block therefore has its plain XXH3-128 digest (what
`xxhsum -H2` prints); larger files get a digest that does not depend on the number of threads.
XXH3 detects any accidental change but is not built to resist a forger: choose `sha256` (one
sequential stream, ~10x slower) when inputs may be tampered with on purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import xxhash

BLOCK_SIZE = 64 * 1024**2
CHUNK_SIZE = 1024**2

ReadRange = Callable[[int, int], Iterator[bytes | memoryview]]
"""Yields the bytes of `[offset, offset + length)` of one file, in chunks."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    new: Callable[[], Any]
    block_size: int | None
    """Size of the independently hashed blocks; None hashes a file as one stream."""

    def blocks(self, size: int) -> list[tuple[int, int]]:
        """The `(offset, length)` units a file of `size` bytes is hashed in (one for an empty file)."""
        if self.block_size is None or size <= self.block_size:
            return [(0, size)]
        return [(start, min(self.block_size, size - start)) for start in range(0, size, self.block_size)]

    def hash_range(self, read: ReadRange, offset: int, length: int, on_bytes: Callable[[int], None]) -> bytes:
        hasher = self.new()
        for chunk in read(offset, length):
            hasher.update(chunk)
            on_bytes(len(chunk))
        return hasher.digest()

    def combine(self, block_digests: list[bytes]) -> str:
        """The file digest from its block digests, in file order."""
        if len(block_digests) == 1:
            return block_digests[0].hex()
        root = self.new()
        root.update(b"".join(block_digests))
        return root.hexdigest()

    def digest_bytes(self, data: bytes) -> str:
        """Digest of an in-memory value (a directory manifest), equal to that of a file holding it."""
        if self.block_size is None or len(data) <= self.block_size:
            return self.new(data).hexdigest()
        view = memoryview(data)
        return self.combine(
            [self.new(view[start : start + length]).digest() for start, length in self.blocks(len(data))]
        )


ALGORITHMS: dict[str, Algorithm] = {
    "xxh3-128-tree": Algorithm("xxh3-128-tree", xxhash.xxh3_128, BLOCK_SIZE),
    "sha256": Algorithm("sha256", hashlib.sha256, None),
}


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        known = ", ".join(ALGORITHMS)
        raise ValueError(f"unknown hash algorithm {name!r}: choose one of {known}") from None


def read_local_range(path: str) -> ReadRange:
    """A ReadRange over a local file that reuses one buffer and fails if the file shrinks."""

    def read(offset: int, length: int) -> Iterator[memoryview]:
        buffer = memoryview(bytearray(min(CHUNK_SIZE, max(length, 1))))
        with open(path, "rb", buffering=0) as handle:
            handle.seek(offset)
            remaining = length
            while remaining:
                count = handle.readinto(buffer[: min(CHUNK_SIZE, remaining)])
                if not count:
                    raise OSError(f"{path} shrank while it was being hashed")
                yield buffer[:count]
                remaining -= count

    return read
