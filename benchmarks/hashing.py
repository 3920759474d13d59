"""Benchmark of data capture: how fast `hash_data` digests local data, against its baselines.

What it measures, on the same files in one run:

* **ours**: `flexlock_prefect.capture.data.hash_data` with the default algorithm (`xxh3-128-tree`)
  and the stat cache off (`FlexlockSettings(stat_cache=False)`), progress reporting off;
* **raw read**: the physical limit, a walk of the same files and a sequential read of every byte
  with `readinto` into one reused 1 MiB buffer, hashing nothing;
* **md5**: `hashlib.md5` streaming the same files in 1 MiB chunks (what DVC uses);
* **flexlock 0.10**: `flexlock.data_hash.hash_data(path, use_cache=False)`, run with the python of a
  virtual environment of its own (`benchmarks/.work/venv-flexlock010`, created once with
  `python -m venv` and `pip install flexlock==0.10.0`, reused afterwards). A subprocess imports it,
  calls it once on a tiny warm-up directory (which starts its joblib worker pool), then times one
  call on the workload and prints the seconds: interpreter start-up, imports and pool start-up
  are not counted. `FLEXLOCK_CACHE` points at a temporary directory.

on two workloads generated under `benchmarks/.work/` (deterministic content from a seeded RNG,
reused by later runs when present with the right sizes): one large file (2 GiB by default) and a
tree of small files (10,000 by default, 1-16 KiB each, over 100 subdirectories).

Each measurement is repeated (3 times by default, methods interleaved) and the median reported,
with the page cache WARM (every file read once right before each timed run) and COLD (every file
evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` right before each timed run; directory metadata
stays cached, as it would for a tree listed moments ago).

Then the stat cache: the tree is captured with the cache on and an empty cache directory, then
re-captured unchanged several times; the re-capture (opening the cache included) is printed as a
percentage of the first capture, for a cold and for a warm first capture.

Targets: ours / raw read <= 1.15, re-capture / first capture <= 5 %.

Run from the repository root:

    python benchmarks/hashing.py                            # 2 GiB file, 10,000 files (~5 min)
    python benchmarks/hashing.py --size-gib 0.25 --files 2000   # a quick run

This is not a test: pytest only collects `tests/`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import xxhash
from _common import (
    CHUNK,
    FLEXLOCK010_VENV,
    WORK_ROOT,
    Flexlock010Venv,
    machine_line,
    median,
    wait_until_settled,
    write_random_file,
)

from flexlock_prefect.capture.data import hash_data
from flexlock_prefect.capture.statcache import open_cache
from flexlock_prefect.settings import FlexlockSettings

SEED = 20_240_601
SUBDIRS = 100
SMALL_MIN, SMALL_MAX = 1024, 16 * 1024

RAW, OURS, MD5, FLEXLOCK010 = "raw read", "ours", "md5", "flexlock 0.10"
METHODS = (RAW, OURS, MD5, FLEXLOCK010)

FLEXLOCK010_SNIPPET = r"""
import json, sys, time
from flexlock.data_hash import hash_data
target, warmup = sys.argv[1], sys.argv[2]
hash_data(warmup, use_cache=False)  # starts joblib's worker pool; not timed
start = time.perf_counter()
digest = hash_data(target, use_cache=False)
print(json.dumps({"seconds": time.perf_counter() - start, "digest": digest}))
"""


# ----------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    name: str
    root: Path
    files: list[Path]
    total_bytes: int


def big_file_workload(work_dir: Path, size_gib: float) -> Workload:
    """One file of `size_gib` GiB, written once and reused while its size is right."""
    size = int(size_gib * 1024**3)
    path = work_dir / f"big-{size}.bin"
    if not path.is_file() or path.stat().st_size != size:
        log(f"generating {path.name} ({size / 1024**3:.2f} GiB)")
        write_random_file(path, size, random.Random(SEED).randbytes)
    return Workload(f"1 file, {_human_bytes(size)}", path, [path], size)


def _tree_layout(count: int) -> list[tuple[str, int]]:
    """`(relative path, size)` of each file of the tree, the same on every run."""
    rng = random.Random(SEED + count)
    return [(f"d{i % SUBDIRS:03d}/f{i:06d}.bin", rng.randint(SMALL_MIN, SMALL_MAX)) for i in range(count)]


def _tree_is_complete(root: Path, layout: list[tuple[str, int]]) -> bool:
    if not root.is_dir():
        return False
    present = sum(len(files) for _, _, files in os.walk(root))
    if present != len(layout):
        return False
    try:
        return all((root / rel).stat().st_size == size for rel, size in layout)
    except FileNotFoundError:
        return False


def _write_tree(root: Path, layout: list[tuple[str, int]]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(SEED)
    for rel, size in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def tree_workload(work_dir: Path, count: int) -> Workload:
    """`count` small files over `SUBDIRS` subdirectories, written once and reused."""
    root = work_dir / f"tree-{count}"
    layout = _tree_layout(count)
    if not _tree_is_complete(root, layout):
        log(f"generating {root.name} ({count:,} files)")
        _write_tree(root, layout)
    files = [root / rel for rel, _ in layout]
    total = sum(size for _, size in layout)
    return Workload(f"{count:,} files, {_human_bytes(total)}", root, files, total)


def warmup_tree(work_dir: Path) -> Path:
    """A tiny directory that flexlock 0.10 hashes once, untimed, before the measured call."""
    root = work_dir / "warmup"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        path = root / f"w{i}.bin"
        if not path.exists():
            path.write_bytes(bytes([i]) * 4096)
    return root


# ----------------------------------------------------------------------------- page cache


def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache (no root needed; pages must be clean)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(files: list[Path]) -> int:
    """Read every byte of `files` into one reused buffer; the bytes read."""
    buffer = bytearray(CHUNK)
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                total += count
    return total


def prepare(workload: Workload, cold: bool) -> None:
    if cold:
        evict(workload.files)
    else:
        read_all(workload.files)


# ----------------------------------------------------------------------------- the methods


def walk_files(root: Path) -> list[str]:
    """Regular files under `root` (or `root` itself), in path order, as every tool must list them."""
    if root.is_file():
        return [str(root)]
    found: list[str] = []
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file():
                    found.append(entry.path)
    found.sort()
    return found


def time_raw_read(workload: Workload) -> float:
    start = time.perf_counter()
    read_all([Path(p) for p in walk_files(workload.root)])
    return time.perf_counter() - start


def md5_file(path: str, buffer: bytearray) -> str:
    view = memoryview(buffer)
    hasher = hashlib.md5()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()


def time_md5(workload: Workload) -> float:
    start = time.perf_counter()
    buffer = bytearray(CHUNK)
    digests = [f"{p}\0{md5_file(p, buffer)}\n" for p in walk_files(workload.root)]
    hashlib.md5("".join(digests).encode()).hexdigest()
    return time.perf_counter() - start


@contextmanager
def _no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda _: None


def time_ours(workload: Workload, digests: set[str]) -> float:
    settings = FlexlockSettings(stat_cache=False)
    cache = open_cache(settings.cache_dir, settings.stat_cache)
    start = time.perf_counter()
    state = hash_data(str(workload.root), settings=settings, cache=cache, progress=_no_progress)
    elapsed = time.perf_counter() - start
    digests.add(state.digest)
    return elapsed


@dataclass
class Flexlock010:
    """flexlock 0.10 in a virtual environment of its own, timed in a subprocess."""

    venv: Flexlock010Venv
    cache_dir: Path
    warmup: Path
    error: str | None = None
    digests: set[str] = field(default_factory=set)

    def ensure(self) -> bool:
        """Create the venv and install flexlock 0.10 unless already there; False (and `error`) on failure."""
        try:
            self.venv.ensure(log)
        except RuntimeError as exc:
            self.error = str(exc)
            return False
        return True

    def time(self, workload: Workload) -> float:
        env = {**os.environ, "FLEXLOCK_CACHE": str(self.cache_dir)}
        env.pop("FLEXLOCK_NO_CACHE", None)
        report = self.venv.run(FLEXLOCK010_SNIPPET, str(workload.root), str(self.warmup), env=env)
        self.digests.add(report["digest"])
        return float(report["seconds"])


# ----------------------------------------------------------------------------- measuring


@dataclass
class Row:
    workload: str
    mode: str
    seconds: dict[str, float]


def measure(workload: Workload, cold: bool, repeats: int, flexlock010: Flexlock010 | None) -> Row:
    """Median seconds of each method, the methods interleaved within each repeat."""
    ours_digests: set[str] = set()
    timers: dict[str, Callable[[Workload], float]] = {
        RAW: time_raw_read,
        OURS: lambda w: time_ours(w, ours_digests),
        MD5: time_md5,
    }
    if flexlock010 is not None:
        timers[FLEXLOCK010] = flexlock010.time
    samples: dict[str, list[float]] = {name: [] for name in timers}
    mode = "cold" if cold else "warm"
    for repeat in range(repeats):
        for name, timer in timers.items():
            prepare(workload, cold)
            samples[name].append(timer(workload))
            log(f"  {workload.name:<22} {mode}  #{repeat + 1}  {name:<14} {samples[name][-1]:8.3f} s")
    if len(ours_digests) != 1:
        raise RuntimeError(f"our digest of {workload.root} changed between runs: {ours_digests}")
    return Row(workload.name, mode, {name: median(s) for name, s in samples.items()})


@dataclass
class Recapture:
    first_mode: str
    first: float
    again: float
    cached_rows: int


def _cache_rows(cache_dir: Path) -> int:
    db = cache_dir / "digests-v1.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM digests").fetchone()[0])


def _timed_capture(workload: Workload, settings: FlexlockSettings) -> tuple[float, str]:
    """One capture as a new process does it: opening the cache included."""
    start = time.perf_counter()
    cache = open_cache(settings.cache_dir, settings.stat_cache)
    state = hash_data(str(workload.root), settings=settings, cache=cache, progress=_no_progress)
    return time.perf_counter() - start, state.digest


def measure_recapture(workload: Workload, cold: bool, repeats: int, recaptures: int, work_dir: Path) -> Recapture:
    """Median first capture into an empty cache, and median re-capture of the unchanged tree."""
    wait_until_settled(workload.files)
    firsts: list[float] = []
    agains: list[float] = []
    rows = 0
    mode = "cold" if cold else "warm"
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="statcache-") as cache_dir:
            settings = FlexlockSettings(cache_dir=Path(cache_dir), stat_cache=True)
            prepare(workload, cold)
            first, digest = _timed_capture(workload, settings)
            firsts.append(first)
            for _ in range(recaptures):
                again, again_digest = _timed_capture(workload, settings)
                if again_digest != digest:
                    raise RuntimeError("re-capture of an unchanged tree gave another digest")
                agains.append(again)
            rows = _cache_rows(Path(cache_dir))
        log(
            f"  stat cache, {mode} first #{repeat + 1}: first {first:.3f} s, "
            f"re-capture median {median(agains[-recaptures:]):.4f} s"
        )
    return Recapture(mode, median(firsts), median(agains), rows)


# ----------------------------------------------------------------------------- reporting


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def speed_table(rows: list[Row]) -> str:
    headers = [
        "workload",
        "page cache",
        "raw read (s)",
        "ours (s)",
        "md5 (s)",
        "flexlock 0.10 (s)",
        "ours / raw read",
        "md5 / ours",
        "flexlock 0.10 / ours",
    ]
    body = []
    for row in rows:
        s = row.seconds
        ours = s[OURS]
        body.append(
            [
                row.workload,
                row.mode,
                _seconds(s[RAW]),
                _seconds(ours),
                _seconds(s[MD5]),
                _seconds(s.get(FLEXLOCK010)),
                _ratio(ours, s[RAW]),
                _ratio(s[MD5], ours),
                _ratio(s.get(FLEXLOCK010), ours),
            ]
        )
    return markdown_table(headers, body)


def recapture_table(workload: Workload, results: list[Recapture]) -> str:
    headers = ["workload", "first capture", "first capture (s)", "re-capture (s)", "re-capture / first"]
    body = [
        [
            workload.name,
            f"{r.first_mode}, empty cache",
            f"{r.first:.3f}",
            f"{r.again:.4f}",
            f"{100 * r.again / r.first:.1f} %",
        ]
        for r in results
    ]
    return markdown_table(headers, body)


def _filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def print_report(
    rows: list[Row],
    tree: Workload,
    recaptures: list[Recapture],
    args: argparse.Namespace,
    flexlock010: Flexlock010,
) -> None:
    print()
    print(f"## Data capture speed (median of {args.repeats}, seconds; lower is faster)")
    print()
    settings = f"xxhash {xxhash.VERSION}, hash_workers {FlexlockSettings().hash_workers}"
    print(f"Machine: {machine_line(f'work dir on {_filesystem(args.work_dir)}', settings)}")
    print()
    print(speed_table(rows))
    print()
    print(
        "Ratios: `ours / raw read` is our overhead over reading the bytes (target <= 1.15); "
        "`md5 / ours` and `flexlock 0.10 / ours` are our speedups."
    )
    if flexlock010.error:
        print(f"\nflexlock 0.10 was not measured: {flexlock010.error}")
    print()
    print(
        f"## Re-capture of the unchanged tree with the stat cache (median of {args.recaptures} "
        f"re-captures x {args.repeats})"
    )
    print()
    print(recapture_table(tree, recaptures))
    print()
    print(
        "Target: re-capture / first capture <= 5 %. Cache rows after a first capture: "
        + ", ".join(str(r.cached_rows) for r in recaptures)
        + f" (expected {len(tree.files) + 1})."
    )
    verdicts = [f"ours / raw read {r.seconds[OURS] / r.seconds[RAW]:.2f} ({r.workload}, {r.mode})" for r in rows]
    verdicts += [f"re-capture {100 * r.again / r.first:.1f} % ({r.first_mode} first)" for r in recaptures]
    print()
    print("Summary: " + "; ".join(verdicts) + ".")


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="size of the large file (default 2)")
    parser.add_argument("--files", type=int, default=10_000, help="files in the small-file tree (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--recaptures", type=int, default=5, help="re-captures per first capture (default 5)")
    parser.add_argument("--work-dir", type=Path, default=WORK_ROOT, help="where workloads and the venv live")
    parser.add_argument("--skip-flexlock010", action="store_true", help="do not build or time flexlock 0.10")
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    big = big_file_workload(args.work_dir, args.size_gib)
    tree = tree_workload(args.work_dir, args.files)
    os.sync()  # dirty pages cannot be evicted: write the workloads back first

    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="flexlock010-cache-") as flexlock_cache:
        flexlock010 = Flexlock010(
            Flexlock010Venv(args.work_dir / FLEXLOCK010_VENV.name), Path(flexlock_cache), warmup_tree(args.work_dir)
        )
        usable = not args.skip_flexlock010 and flexlock010.ensure()
        if flexlock010.error:
            log(f"flexlock 0.10 unavailable: {flexlock010.error}")
        rows = [
            measure(workload, cold, args.repeats, flexlock010 if usable else None)
            for workload in (big, tree)
            for cold in (False, True)
        ]
    recaptures = [measure_recapture(tree, cold, args.repeats, args.recaptures, args.work_dir) for cold in (True, False)]
    print_report(rows, tree, recaptures, args, flexlock010)
    log(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
