"""Benchmark of `locked_flow`'s overhead: a trivial run as a `locked_flow` against the same
function as a plain Prefect `@flow`, on the same Prefect server.

Workload, generated once under `benchmarks/.work/overhead/` and reused afterwards:

* a 100 MB input file of random bytes, declared as a data input (`data=["input_data"]`);
* a git repository of 2,000 small committed files, declared as a code repo (`repos={"code": ...}`),
  with a small uncommitted change and an untracked file, so that it is dirty as real work trees
  usually are (every capture then stages the working state and keeps a snapshot ref).

The compute writes one small file into its save_dir. One `prefect server start` (SQLite, loopback,
no UI) serves the whole benchmark; the in-process client points at it with the heartbeat off.
Flow-run logs are still sent to the API; only Prefect's console handler is quietened
(`PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=WARNING`) to keep the output readable.

What is timed (wall time of each call, in this process):

* **plain**: `prefect.flow(name="plain")(compute)({"save_dir": ...})`;
* **locked**: `locked_flow(config=..., data=["input_data"], repos={"code": repo}, name="locked")(compute)()`:
  the config is resolved, the repo and the 100 MB file captured, run.lock written, the compute run
  as a task, the result recorded, artifacts published and an event emitted;
* **capture**: the same capture without Prefect, `capture_run(config, data=..., repos=...)` then
  `lock.save()`: what flexlock itself costs.

The first call of each is a warm-up (Prefect's first flow and task registrations, imports) and
is kept out of the statistics; it is shown on its own, as what the first locked run in a fresh
process costs (its stat cache is empty too). Then `--runs` rounds, each: plain, locked and capture
with the stat cache warm (the steady state: users re-run on unchanged data), then locked and
capture each with `FLEXLOCK_CACHE_DIR` pointing at an empty directory (the first run on new data:
the 100 MB file is hashed in full, from the page cache, as it was read moments before). Medians
and 90th percentiles are reported, with the added time (locked - plain) split into flexlock's
capture + run.lock write and the rest (Prefect's task runs, artifacts and event); the durations
the server recorded for each task of the locked runs break it down further.

Target (from the issue): at most 1.5 s added per run on this machine, most of it Prefect's own.

Run from the repository root:

    python benchmarks/overhead.py             # 10 rounds: ~40 s on 2 cores, server start-up included
    python benchmarks/overhead.py --runs 30

This is not a test: pytest only collects `tests/`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    API_PAGE,
    WORK_ROOT,
    machine_line,
    median,
    percentile,
    prepare_environment,
    wait_until_settled,
    write_random_file,
)

DEFAULT_WORK_DIR = WORK_ROOT / "overhead"
INPUT_BYTES = 100 * 1000**2
REPO_FILES = 2_000
REPO_DIRS = 20
TARGET_ADDED_MS = 1_500.0
STEPS = (
    "resolve-config", "capture-code", "capture-data", "capture-environment", "write-run-lock",
    "compute", "record-result", "publish-artifacts", "emit-event",
)  # fmt: skip


# --------------------------------------------------------------------------- workload


def compute(cfg: Mapping[str, Any]) -> None:
    """The trivial compute: one small file in the run's save_dir."""
    save_dir = Path(str(cfg["save_dir"]))
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "result.txt").write_text("42\n")


def ensure_input_file(path: Path, size: int = INPUT_BYTES) -> None:
    """`size` random bytes at `path`, written once (kept when already of the right size)."""
    if not path.is_file() or path.stat().st_size != size:
        write_random_file(path, size, os.urandom)


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return result.stdout


def ensure_repo(repo: Path, files: int = REPO_FILES) -> None:
    """A git repository of `files` small committed files, created once with the git CLI, then
    made dirty with a fixed edit and a fixed untracked file (the same working tree every run)."""
    if not _repo_ready(repo, files):
        shutil.rmtree(repo, ignore_errors=True)
        _create_repo(repo, files)
    (repo / "pkg00" / "mod0000.py").write_text("VALUE = 0  # edited, not committed\n")
    (repo / "NOTES.md").write_text("work in progress\n")


def _repo_ready(repo: Path, files: int) -> bool:
    if not (repo / ".git").is_dir():
        return False
    try:
        return len(git(repo, "ls-files").splitlines()) == files
    except subprocess.CalledProcessError:
        return False


def _create_repo(repo: Path, files: int) -> None:
    per_dir = -(-files // REPO_DIRS)
    for index in range(files):
        package = repo / f"pkg{index // per_dir:02d}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"mod{index:04d}.py").write_text(f'"""Module {index}."""\n\nVALUE = {index}\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Overhead Benchmark")
    git(repo, "config", "user.email", "benchmark@localhost")
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{files} small files")


# --------------------------------------------------------------------------- stat cache


@contextmanager
def stat_cache_dir(path: Path) -> Iterator[None]:
    """Point flexlock's stat cache at `path` (settings are read afresh on every capture)."""
    previous = os.environ.get("FLEXLOCK_CACHE_DIR")
    os.environ["FLEXLOCK_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FLEXLOCK_CACHE_DIR", None)
        else:
            os.environ["FLEXLOCK_CACHE_DIR"] = previous


# --------------------------------------------------------------------------- the three calls


@dataclass
class Subjects:
    """The three timed calls: plain returns its flow run id, locked its save_dir, capture the run.lock URL."""

    plain: Callable[[], str]
    locked: Callable[[], str]
    capture: Callable[[], str]


def make_subjects(work: Path, input_file: Path, repo: Path) -> Subjects:
    from prefect import flow

    from flexlock_prefect.capture import capture_run
    from flexlock_prefect.main import locked_flow

    stamp = "${now:%Y%m%d-%H%M%S-%f}"
    locked_config = {"input_data": str(input_file), "save_dir": f"{work}/runs/{stamp}"}
    capture_config = {"input_data": str(input_file), "save_dir": f"{work}/capture-runs/{stamp}"}
    plain_flow = flow(name="plain")(compute)
    locked = locked_flow(config=locked_config, data=["input_data"], repos={"code": str(repo)}, name="locked")(compute)

    def plain() -> str:
        state = plain_flow({"save_dir": str(work / "plain-runs" / str(time.time_ns()))}, return_state=True)
        return str(state.state_details.flow_run_id)

    def capture() -> str:
        _, lock = capture_run(capture_config, data=["input_data"], repos={"code": str(repo)})
        return lock.save()

    return Subjects(plain=plain, locked=lambda: locked(), capture=capture)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call in ms, and what it returned."""
    started = time.perf_counter()
    value = call()
    return (time.perf_counter() - started) * 1000, value


# --------------------------------------------------------------------------- measurement


@dataclass
class Series:
    """Wall times of one kind of call (ms) and what each call returned."""

    ms: list[float] = field(default_factory=list)
    returned: list[Any] = field(default_factory=list)

    def record(self, call: Callable[[], Any]) -> float:
        elapsed_ms, value = timed(call)
        self.ms.append(elapsed_ms)
        self.returned.append(value)
        return elapsed_ms


@dataclass
class Measurements:
    first_plain_ms: float = 0.0
    first_locked_ms: float = 0.0
    plain: Series = field(default_factory=Series)
    locked: Series = field(default_factory=Series)
    capture: Series = field(default_factory=Series)
    cold_locked: Series = field(default_factory=Series)
    cold_capture: Series = field(default_factory=Series)


def measure(subjects: Subjects, work: Path, runs: int) -> Measurements:
    """The first call of each (discarded from the statistics), then `runs` interleaved rounds."""
    caches = work / "stat-caches"
    shutil.rmtree(caches, ignore_errors=True)
    result = Measurements()
    with stat_cache_dir(caches / "steady"):  # the first locked call fills the steady cache
        result.first_plain_ms, _ = timed(subjects.plain)
        result.first_locked_ms, _ = timed(subjects.locked)
        timed(subjects.capture)
    first = f"plain {result.first_plain_ms:.0f} ms, locked {result.first_locked_ms:.0f} ms"
    print(f"first calls (warm-up, kept out of the statistics): {first}")
    for round_ in range(1, runs + 1):
        measure_round(subjects, result, caches, round_)
        times = {
            "plain": result.plain.ms[-1],
            "locked": result.locked.ms[-1],
            "capture": result.capture.ms[-1],
            "cold locked": result.cold_locked.ms[-1],
            "cold capture": result.cold_capture.ms[-1],
        }
        print(f"round {round_:>3}/{runs}: " + ", ".join(f"{name} {ms:4.0f}" for name, ms in times.items()) + " ms")
    return result


def measure_round(subjects: Subjects, result: Measurements, caches: Path, round_: int) -> None:
    """Plain, locked and capture on the warm stat cache, then locked and capture each on an empty one."""
    with stat_cache_dir(caches / "steady"):
        result.plain.record(subjects.plain)
        result.locked.record(subjects.locked)
        result.capture.record(subjects.capture)
    with stat_cache_dir(caches / f"cold-{round_}-locked"):
        result.cold_locked.record(subjects.locked)
    with stat_cache_dir(caches / f"cold-{round_}-capture"):
        result.cold_capture.record(subjects.capture)


# --------------------------------------------------------------------------- server-side breakdown


@dataclass
class ServerTimes:
    """What the Prefect server recorded for a group of flow runs, in ms per run."""

    steps: dict[str, list[float]]
    bodies: list[float]


def server_breakdown(
    groups: Mapping[str, list[str]], expected_tasks: int, timeout_s: float = 30.0
) -> dict[str, ServerTimes]:
    """Task-run durations and flow-run bodies (Running -> final state) per group of flow run ids,
    polled until `expected_tasks` task runs are readable (task-run states reach the database
    through events, seconds after the fact) or `timeout_s` passes."""
    from prefect.client.orchestration import get_client

    all_ids = [run_id for ids in groups.values() for run_id in ids]
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            task_runs = _finished_task_runs(client, all_ids)
            if len(task_runs) >= expected_tasks or time.monotonic() > deadline:
                break
            time.sleep(1)
        bodies = _flow_bodies(client, all_ids)
    result = {}
    for group, ids in groups.items():
        steps: dict[str, list[float]] = {name: [] for name in STEPS}
        for task_run in task_runs:
            if str(task_run.flow_run_id) in ids:
                steps.setdefault(task_run.name.rsplit("-", 1)[0], []).append(
                    _ms(task_run.end_time - task_run.start_time)
                )
        result[group] = ServerTimes(steps, [bodies[run_id] for run_id in ids if run_id in bodies])
    return result


def _finished_task_runs(client: Any, flow_run_ids: list[str]) -> list[Any]:
    """The finished task runs of these flow runs, read a page at a time (the API caps a page)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
    found: list[Any] = []
    while page := client.read_task_runs(flow_run_filter=run_filter, limit=API_PAGE, offset=len(found)):
        found += page
    return [t for t in found if t.start_time and t.end_time]


def _flow_bodies(client: Any, flow_run_ids: list[str]) -> dict[str, float]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    bodies = {}
    for start in range(0, len(flow_run_ids), API_PAGE):
        run_filter = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids[start : start + API_PAGE]))
        for run in client.read_flow_runs(flow_run_filter=run_filter, limit=API_PAGE):
            if run.start_time and run.end_time:
                bodies[str(run.id)] = _ms(run.end_time - run.start_time)
    return bodies


def _ms(delta: Any) -> float:
    return delta.total_seconds() * 1000


def locked_run_ids(save_dirs: list[str]) -> list[str]:
    """The Prefect flow run id recorded in each save_dir's run.lock."""
    from flexlock_prefect.lock import RunLock

    return [str(RunLock.load(save_dir).prefect.flow_run_id) for save_dir in save_dirs]


def collect_server_times(m: Measurements) -> dict[str, ServerTimes] | None:
    """The server's view of the measured runs; None (and why, on stderr) when it cannot be read:
    it is a diagnostic, which must not cost the measurements."""
    try:
        groups = {
            "plain": [str(run_id) for run_id in m.plain.returned],
            "steady": locked_run_ids(m.locked.returned),
            "cold": locked_run_ids(m.cold_locked.returned),
        }
        return server_breakdown(groups, expected_tasks=(len(groups["steady"]) + len(groups["cold"])) * len(STEPS))
    except Exception as exc:  # noqa: BLE001
        print(f"could not read the runs back from the Prefect server: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- report


@dataclass
class Scenario:
    """Medians of one scenario: the plain flow, the locked flow and flexlock's capture alone."""

    plain: float
    locked: float
    capture: float

    @property
    def added(self) -> float:
        return self.locked - self.plain

    @property
    def rest(self) -> float:
        return self.added - self.capture

    @property
    def prefect_share(self) -> float:
        return self.rest / self.added if self.added > 0 else float("nan")


def scenarios(m: Measurements) -> dict[str, Scenario]:
    plain = median(m.plain.ms)
    return {
        "steady": Scenario(plain, median(m.locked.ms), median(m.capture.ms)),
        "cold": Scenario(plain, median(m.cold_locked.ms), median(m.cold_capture.ms)),
    }


Row = tuple[int, str, str, str]  # (indent level, what, median ms, p90 ms)


def rows(m: Measurements, by_scenario: dict[str, Scenario]) -> list[Row]:
    """The result table, for the console and for markdown."""
    table: list[Row] = [(0, "plain @flow", _fmt(median(m.plain.ms)), _fmt(percentile(m.plain.ms, 90)))]
    titles = {
        "steady": ("locked_flow, steady (warm stat cache)", m.locked, m.capture),
        "cold": ("locked_flow, first run on new data (cold stat cache)", m.cold_locked, m.cold_capture),
    }
    for key, (title, locked, capture) in titles.items():
        s = by_scenario[key]
        table += [
            (0, title, _fmt(s.locked), _fmt(percentile(locked.ms, 90))),
            (1, "added (locked - plain)", _fmt(s.added), "-"),
            (2, "flexlock capture + run.lock write (no Prefect)", _fmt(s.capture), _fmt(percentile(capture.ms, 90))),
            (2, "rest: Prefect task runs, artifacts, event", _fmt(s.rest), "-"),
            (1, "ratio locked / plain", f"{s.locked / s.plain:.1f}x", "-"),
        ]
    return table


def first_calls(m: Measurements) -> str:
    """The warm-up calls, kept out of the table: the plain flow, called first, also pays Prefect's
    process-wide start-up (API client, flow-run engine), so the two are not a fair pair."""
    return (
        f"First calls in the process (warm-up, not in the table): plain @flow {m.first_plain_ms:.0f} ms "
        f"(called first, it also pays Prefect's start-up in the process), then locked_flow "
        f"{m.first_locked_ms:.0f} ms (cold stat cache)."
    )


def _fmt(value: float) -> str:
    return f"{value:.0f}"


def print_console_table(table: list[Row], runs: int) -> None:
    width = max(2 * indent + len(what) for indent, what, _, _ in table)
    print(f"\n{'':<{width}}  {'median ms':>10}  {'p90 ms':>7}   ({runs} rounds)")
    for indent, what, med, high in table:
        print(f"{'  ' * indent + what:<{width}}  {med:>10}  {high:>7}")


def print_server_times(times: dict[str, ServerTimes], m: Measurements) -> None:
    print("\nWhere a locked run's time goes, as the Prefect server recorded it (median ms per run):")
    print(f"  {'':<32} {'steady':>8} {'cold':>8}")
    totals = dict.fromkeys(("steady", "cold"), 0.0)
    for name in STEPS:
        values = {key: median(times[key].steps.get(name, [])) for key in totals}
        for key, value in values.items():
            totals[key] += 0.0 if value != value else value  # NaN (no task runs read) counts as 0
        print(f"  {'task ' + name:<32} {values['steady']:8.1f} {values['cold']:8.1f}")
    print(f"  {'sum of the task runs':<32} {totals['steady']:8.1f} {totals['cold']:8.1f}")
    walls = {"plain": m.plain.ms, "steady": m.locked.ms, "cold": m.cold_locked.ms}
    for key, wall in walls.items():
        body = median(times[key].bodies)
        label = "plain flow" if key == "plain" else f"locked flow, {key}"
        print(
            f"  {label:<20} flow run body {body:6.1f} (Running -> Completed on the server), "
            f"outside it {median(wall) - body:6.1f} (wall median - body)"
        )
    print(
        "  (resolve-config .. write-run-lock are flexlock's capture as Prefect tasks; record-result, which re-digests"
        "\n  the outputs and rewrites run.lock, is flexlock's work too but falls in the table's 'rest')"
    )
    read = sum(len(v) for key in totals for v in times[key].steps.values())
    expected = (len(m.locked.ms) + len(m.cold_locked.ms)) * len(STEPS)
    if read < expected:
        print(f"  (only {read} of {expected} task runs were readable from the server in time)")


def verdict(by_scenario: dict[str, Scenario]) -> list[str]:
    def met(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    lines = [f"Target: <= {TARGET_ADDED_MS:.0f} ms added per run on this machine, most of it Prefect's own."]
    for key, label in (("steady", "steady (warm stat cache)"), ("cold", "first run on new data (cold stat cache)")):
        s = by_scenario[key]
        lines.append(
            f"- {label}: {s.added:.0f} ms added -> {met(s.added <= TARGET_ADDED_MS)}; "
            f"Prefect's share {s.prefect_share:.0%} (flexlock's {s.capture:.0f} ms) -> {met(s.prefect_share > 0.5)}"
        )
    return lines


def print_markdown(table: list[Row], runs: int, host: str, lines: list[str]) -> None:
    print("\nMarkdown:\n")
    print(
        "Overhead of a trivial `locked_flow` run over the same function as a plain `@flow`, on the same "
        "Prefect server (SQLite, loopback, heartbeat off), with a 100 MB input file and a dirty git repo of "
        f"2,000 files (`python benchmarks/overhead.py`, median and p90 of {runs} interleaved rounds):\n"
    )
    print("| | median ms | p90 ms |\n|---|---:|---:|")
    for indent, what, med, high in table:
        label = f"**{what}**" if indent == 0 else "&emsp;" * indent + what
        print(f"| {label} | {med} | {high} |")
    print(f"\nMachine: {host}.\n")
    print("\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument(
        "--work-dir", type=Path, default=DEFAULT_WORK_DIR, help=f"workload and scratch (default {DEFAULT_WORK_DIR})"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when piped
    work: Path = args.work_dir.resolve()
    input_file, repo = work / "input.bin", work / "repo"
    print(f"workload in {work}", flush=True)
    ensure_input_file(input_file)
    ensure_repo(repo)
    wait_until_settled([input_file])
    for scratch in ("runs", "capture-runs", "plain-runs"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    # Prefect's console handler quietened: flow-run logs still reach the API, the output stays readable
    prepare_environment(work / "prefect-client-home", PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING")
    import prefect

    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    host = machine_line(f"Prefect {prefect.__version__}", git_version)
    print(f"machine: {host}\nstarting the Prefect server...", flush=True)
    started = time.monotonic()
    from tests.helpers.servers import prefect_server_for_this_process

    shutil.rmtree(work / "prefect-server", ignore_errors=True)
    with prefect_server_for_this_process(work / "prefect-server"):
        print(f"server healthy after {time.monotonic() - started:.1f} s", flush=True)
        subjects = make_subjects(work, input_file, repo)
        measured = measure(subjects, work, args.runs)
        server_times = collect_server_times(measured)
    by_scenario = scenarios(measured)
    table = rows(measured, by_scenario)
    print_console_table(table, args.runs)
    print(first_calls(measured))
    if server_times is not None:
        print_server_times(server_times, measured)
    lines = verdict(by_scenario)
    print("\n" + "\n".join(lines))
    print_markdown(table, args.runs, host, [first_calls(measured), "", *lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
