"""Benchmark of the event chain's latency: from the end of a main run to its triggered diag run.

What is measured. The example main flow `train` (flows/train.py) runs in this process, one run
at a time, `--runs` times (default 20), each into its own save_dir. Its last step emits
`flexlock.run.completed`; the diag deployment's trigger (flexlock_prefect.serving) makes the
Prefect server create a diag flow run, which the served deployments' runner picks up, runs in a
subprocess and which logs the save_dir to MLflow. The next main run starts only once the diag
run of the previous one is final, so measurements never overlap.

Two runners take turns on the same Prefect server, `--runs` main runs each: first the baseline,
`python -m flexlock_prefect.serving --cold` (`prefect.serve`: each flow run a new interpreter that
imports Prefect, MLflow and the diag), then ours, the same deployments served warm
(`serve_pipelines`: each flow run a fork of a process that preloaded them). `--serve warm` (or
`cold`) measures one of them only. Per run, from the timestamps the Prefect server recorded (one
machine, one clock):

* **created - end**: the diag flow run's `created` minus the main flow run's `end_time` (the
  flow run id is read from `<save_dir>/run.lock`). The event is emitted by the flow's last task,
  before the flow run itself is marked Completed, so this can be negative;
* **pick-up - created**: the diag run's Pending state (the runner claimed it) minus its creation:
  what `PREFECT_RUNNER_POLL_FREQUENCY` governs;
* **started - created**: the diag run's `start_time` (Running, in the runner's subprocess) minus
  its creation: pick-up plus the subprocess start;
* **completed - end**: the diag run's `end_time` minus the main run's `end_time`: what a user
  waits for, until the run is in MLflow.

Every diag run is checked to have been created by an automation (`created_by.type ==
"AUTOMATION"`) with `save_dir` as its parameter, and to have completed; any that was not (or
never appeared within `--timeout`) is reported and left out of the statistics.

Set-up, all under `benchmarks/.work/trigger_latency/` (git-ignored; runs, the Prefect database
and the MLflow store are recreated on every invocation): a `prefect server start` on loopback
(SQLite, no UI) that the in-process client points at with the flow heartbeat off; an MLflow
SQLite store `mlflow.db` (`MLFLOW_TRACKING_URI`), initialised before the runs so that its schema
migrations are not timed, with the diag's experiment (the config's `project`) created there with
its artifacts in `mlartifacts/`; each runner (`python -m flexlock_prefect.serving [--cold]`) in a
subprocess with `PREFECT_RUNNER_POLL_FREQUENCY=--poll` (default 1 s, as in the tests; Prefect's
default is 10 s), stopped once its last diag run's process has exited.
The diag runs log to that MLflow store; no model is registered (`model_name=''`).

Before starting anything the script waits until the machine is quiet (1-minute load average
below `--quiet-load`, checked every 15 s, at most `--quiet-wait` seconds, then it runs anyway and
says so); `--quiet-wait 0` skips the wait.

Target: completed - end, served warm, p50 ≤ 4 s and p95 ≤ 6 s on this machine.

Run from the repository root:

    python benchmarks/trigger_latency.py [--runs N] [--poll S] [--serve warm]   # ~10 min on 2 cores

Logs: `server.log` (Prefect server), `serve-cold.log` and `serve-warm.log` (each runner and its
diag runs) in the work directory.
This is not a test: pytest only collects `tests/`.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import WORK_ROOT, machine_line, percentile, prepare_environment, read_all_flow_runs

DEFAULT_WORK_DIR = WORK_ROOT / "trigger_latency"
DIAG_DEPLOYMENT = "diag/train"
TARGET_COMPLETED_P50_S = 4.0
TARGET_COMPLETED_P95_S = 6.0
MODES = ("cold", "warm")
"""The baseline (each diag run a new interpreter), then ours (each a fork of a warm process)."""
STARTED_MARKERS = ("are being served", "flow runs started warm")
"""What `prefect.serve` and `serve_pipelines` print once their deployments and triggers exist."""
QUIET_CHECK_S = 15.0
POLL_S = 0.5  # how often this script looks for the diag run (the timestamps come from the server)


@dataclass(frozen=True)
class Sample:
    """One main run and what became of its diag run (times in seconds, None when unknown)."""

    index: int
    save_dir: str
    main_flow_run_id: str
    diag_flow_run_id: str | None
    created_after_end_s: float | None
    pickup_after_created_s: float | None
    started_after_created_s: float | None
    completed_after_end_s: float | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


# --------------------------------------------------------------------------- environment, services


def reset_work_dir(work: Path) -> None:
    """A fresh Prefect database, MLflow store and runs directory (the example data is kept)."""
    for name in ("prefect-server", "prefect-client-home", "runs"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "mlflow.db").unlink(missing_ok=True)
    for log in work.glob("serve*.log"):
        log.unlink()
    shutil.rmtree(work / "mlartifacts", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)


def wait_until_quiet(threshold: float, max_wait_s: float) -> str:
    """Wait until the 1-minute load average is below `threshold`; a line saying how it went."""
    if max_wait_s <= 0:
        return f"no wait for a quiet machine (load average {os.getloadavg()[0]:.2f})"
    started = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if load < threshold:
            return f"machine quiet after {waited:.0f} s of waiting (load average {load:.2f} < {threshold})"
        if waited >= max_wait_s:
            return (
                f"gave up waiting for a quiet machine after {waited:.0f} s: load average {load:.2f} "
                f"≥ {threshold}; running anyway"
            )
        print(f"  load average {load:.2f} ≥ {threshold}, waiting ({waited:.0f} s so far)…", flush=True)
        time.sleep(QUIET_CHECK_S)


@contextmanager
def serve_deployments(work: Path, poll_s: float, mode: str) -> Iterator[Path]:
    """The example deployments served (`mode` "cold" or "warm") in a subprocess polling every
    `poll_s`, ready once it has served the diag deployment and its automation; stopped (process
    group) on the way out, once its last flow run's process has exited."""
    from flexlock_prefect.local import served_deployments, wait_until_idle

    log = work / f"serve-{mode}.log"
    env = {
        "PREFECT_RUNNER_POLL_FREQUENCY": format_poll(poll_s),
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",
    }
    with served_deployments(log, env, warm=mode == "warm") as process:
        wait_for_diag_automation(log, process)
        yield log
        wait_until_idle(process, timeout_s=60)


def format_poll(poll_s: float) -> str:
    return f"{poll_s:g}"


def wait_for_diag_automation(log: Path, process: Any, timeout_s: float = 120) -> None:
    """Block until this runner has served the diag deployment with its trigger's automation (an
    earlier runner's deployment and automation may still be there: its log says when it has)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the served deployments exited with {process.returncode}: see {log}")
        if not any(marker in log.read_text(errors="replace") for marker in STARTED_MARKERS):
            time.sleep(0.5)
            continue
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(DIAG_DEPLOYMENT)
            except ObjectNotFound:
                deployment = None
            if deployment and client.read_resource_related_automations(f"prefect.deployment.{deployment.id}"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the diag deployment and its automation were not served within {timeout_s:.0f}s: see {log}")


def init_mlflow_store(experiment: str, artifacts: Path) -> None:
    """Create the MLflow SQLite schema now, so that its migrations are not in the first diag run,
    and the diag's experiment with its artifacts under the work directory (not `./mlruns`)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifacts.as_uri())


# --------------------------------------------------------------------------- one measured run


def run_main(example: ModuleType, data: Path, save_dir: Path) -> str:
    """One run of the example main flow, in this process; returns its save_dir as recorded."""
    return example.train(overrides=[f"input_data={data}", f"save_dir={save_dir}", "model_name=''"])


def main_flow_run_id(save_dir: str) -> str:
    from flexlock_prefect import RunLock

    prefect = RunLock.load(save_dir).prefect
    if prefect is None or not prefect.flow_run_id:
        raise RuntimeError(f"{save_dir}/run.lock records no Prefect flow run id")
    return str(prefect.flow_run_id)


def find_diag_run(save_dir: str) -> Any | None:
    """The diag flow run whose `save_dir` parameter is `save_dir` (the most recent, if several)."""
    matching = [run for run in read_all_flow_runs(DIAG_DEPLOYMENT) if run.parameters.get("save_dir") == save_dir]
    return max(matching, key=lambda run: run.created) if matching else None


def wait_for_final_diag(save_dir: str, timeout_s: float) -> Any | None:
    """The diag flow run of `save_dir` once it is final; the last seen (or None) on timeout."""
    deadline = time.monotonic() + timeout_s
    run = None
    while time.monotonic() < deadline:
        run = find_diag_run(save_dir)
        if run is not None and run.state is not None and run.state.is_final():
            return run
        time.sleep(POLL_S)
    return run


def seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    return (later - earlier).total_seconds() if later is not None and earlier is not None else None


def pending_time(client: Any, flow_run_id: Any) -> datetime | None:
    """When the runner claimed the run: the timestamp of its first Pending state."""
    states = client.read_flow_run_states(flow_run_id)
    pending = [state.timestamp for state in states if state.type.value == "PENDING"]
    return min(pending) if pending else None


def diag_problem(diag: Any | None, save_dir: str, timeout_s: float) -> str | None:
    """Why a diag run does not count (None when it was triggered by the automation and completed)."""
    if diag is None:
        return f"no diag run created within {timeout_s:.0f} s"
    problems = []
    created_by = diag.created_by.type if diag.created_by else None
    if created_by != "AUTOMATION":
        problems.append(f"created by {created_by}, not by an automation")
    if diag.parameters != {"save_dir": save_dir}:
        problems.append(f"parameters {diag.parameters}")
    state = diag.state.type.value if diag.state else "no state"
    if not (diag.state and diag.state.is_completed()):
        problems.append(
            f"state {state}" + ("" if diag.state and diag.state.is_final() else f" after {timeout_s:.0f} s")
        )
    return "; ".join(problems) or None


def measure_one(index: int, example: ModuleType, data: Path, runs_dir: Path, timeout_s: float) -> Sample:
    """Run the main flow once, wait for its diag run, and read both runs' timestamps from the server."""
    from prefect.client.orchestration import get_client

    save_dir = run_main(example, data, runs_dir / f"run-{index:02d}")
    main_id = main_flow_run_id(save_dir)
    diag = wait_for_final_diag(save_dir, timeout_s)
    with get_client(sync_client=True) as client:
        main = client.read_flow_run(main_id)
        pending = pending_time(client, diag.id) if diag is not None else None
    problem = diag_problem(diag, save_dir, timeout_s)
    if main.end_time is None:
        problem = "; ".join(filter(None, [problem, f"main flow run {main_id} has no end time ({main.state_type})"]))
    return Sample(
        index=index,
        save_dir=save_dir,
        main_flow_run_id=main_id,
        diag_flow_run_id=str(diag.id) if diag is not None else None,
        created_after_end_s=seconds(diag.created, main.end_time) if diag is not None else None,
        pickup_after_created_s=seconds(pending, diag.created) if diag is not None else None,
        started_after_created_s=seconds(diag.start_time, diag.created) if diag is not None else None,
        completed_after_end_s=seconds(diag.end_time, main.end_time) if diag is not None else None,
        problem=problem,
    )


# --------------------------------------------------------------------------- statistics and report


@dataclass(frozen=True)
class Stats:
    name: str
    n: int
    p50: float
    p95: float
    max: float


def stats(name: str, values: Sequence[float | None]) -> Stats:
    known = [v for v in values if v is not None]
    return Stats(name, len(known), percentile(known, 50), percentile(known, 95), max(known, default=math.nan))


def fmt(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def print_header() -> None:
    print(
        f"{'run':>4} {'created-end':>12} {'pickup-created':>15} {'started-created':>16} "
        f"{'completed-end':>14}  diag flow run / problem"
    )


def print_row(sample: Sample) -> None:
    tail = sample.diag_flow_run_id or ""
    if sample.problem:
        tail += f"  PROBLEM: {sample.problem}"
    print(
        f"{sample.index:>4} {fmt(sample.created_after_end_s):>12} {fmt(sample.pickup_after_created_s):>15} "
        f"{fmt(sample.started_after_created_s):>16} {fmt(sample.completed_after_end_s):>14}  {tail}",
        flush=True,
    )


def summary(samples: Sequence[Sample]) -> list[Stats]:
    good = [s for s in samples if s.ok]
    return [
        stats("diag created - main end", [s.created_after_end_s for s in good]),
        stats("diag pick-up (Pending) - diag created", [s.pickup_after_created_s for s in good]),
        stats("diag started (Running) - diag created", [s.started_after_created_s for s in good]),
        stats("diag completed - main end", [s.completed_after_end_s for s in good]),
    ]


def print_summary(
    samples: dict[str, Sequence[Sample]], poll_s: float, host: str, quiet: str, loads: tuple[float, float]
) -> bool:
    """Print each runner's statistics, the problems and the README table (baseline, ours and their
    ratio); True when the target is met and no run had a problem."""
    rows = {mode: summary(mode_samples) for mode, mode_samples in samples.items()}
    poll = f"PREFECT_RUNNER_POLL_FREQUENCY={format_poll(poll_s)} s"
    print()
    print(f"Machine: {host}; {poll}")
    print(f"Load: {quiet}; 1-min load average {loads[0]:.2f} at the first run, {loads[1]:.2f} after the last")
    for mode, mode_rows in rows.items():
        good = sum(sample.ok for sample in samples[mode])
        print(f"\nServed {mode}: {good} of {len(samples[mode])} main runs (seconds)")
        print(f"{'':40} {'n':>3} {'p50':>7} {'p95':>7} {'max':>7}")
        for row in mode_rows:
            print(f"{row.name:40} {row.n:>3} {fmt(row.p50):>7} {fmt(row.p95):>7} {fmt(row.max):>7}")

    problems = [(mode, sample) for mode, mode_samples in samples.items() for sample in mode_samples if not sample.ok]
    print()
    for mode, sample in problems:
        print(f"  {mode} run {sample.index} ({sample.save_dir}): {sample.problem} (left out of the statistics)")
    if not problems:
        print("Every diag run was created by the automation and completed.")

    met = True
    if "warm" in rows:
        completed = rows["warm"][-1]
        met = completed.n > 0 and completed.p50 <= TARGET_COMPLETED_P50_S and completed.p95 <= TARGET_COMPLETED_P95_S
        print(
            f"Target, served warm, completed - end p50 ≤ {TARGET_COMPLETED_P50_S:g} s and p95 ≤ "
            f"{TARGET_COMPLETED_P95_S:g} s: {'MET' if met else 'NOT MET'} "
            f"(p50 {fmt(completed.p50)} s, p95 {fmt(completed.p95)} s)"
        )

    print("\nREADME table:\n")
    modes = list(rows)
    header = " | ".join(f"{mode} p50 / p95 / max" for mode in modes)
    ratio = len(modes) == 2
    print(f"| seconds | {header} |" + (" cold ÷ warm, p50 |" if ratio else ""))
    print("|---|" + "---:|" * (len(modes) + ratio))
    for index, name in enumerate(row.name for row in rows[modes[0]]):
        cells = [rows[mode][index] for mode in modes]
        line = " | ".join(f"{fmt(c.p50)} / {fmt(c.p95)} / {fmt(c.max)}" for c in cells)
        if ratio:
            line += f" | {cells[0].p50 / cells[1].p50:.1f}×" if cells[1].p50 > 0 else " | —"
        print(f"| {name} | {line} |")
    return met and not problems


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="main runs to measure (default 20)")
    parser.add_argument(
        "--poll", type=float, default=1.0, help="PREFECT_RUNNER_POLL_FREQUENCY of the served deployments, s (default 1)"
    )
    parser.add_argument(
        "--serve",
        action="append",
        choices=MODES,
        help="measure this runner only (repeatable; default: cold, the baseline, then warm, ours)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="wait at most this long for each diag run, s")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--quiet-load", type=float, default=0.8, help="wait until the load average is below this")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        help="give up waiting for a quiet machine after this long, s (0: no wait)",
    )
    args = parser.parse_args(argv)
    args.serve = args.serve or list(MODES)
    if args.runs < 1 or args.poll <= 0:
        parser.error("--runs must be ≥ 1 and --poll > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir.resolve()
    reset_work_dir(work)
    prepare_environment(
        work / "prefect-client-home",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",  # in this process; the served deployments get INFO
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
    )
    import prefect

    host = machine_line(f"Prefect {prefect.__version__}")
    modes = [mode for mode in MODES if mode in args.serve]
    print(
        f"Trigger latency: {args.runs} main runs served {' then '.join(modes)}, "
        f"PREFECT_RUNNER_POLL_FREQUENCY={format_poll(args.poll)} s"
    )
    print(f"Machine: {host}")
    quiet = wait_until_quiet(args.quiet_load, args.quiet_wait)
    print(quiet, flush=True)

    from flexlock_prefect.examples import train as example_train
    from tests.helpers.servers import prefect_server_for_this_process

    samples: dict[str, list[Sample]] = {}
    with ExitStack() as services:
        started = time.monotonic()
        url = services.enter_context(prefect_server_for_this_process(work / "prefect-server"))
        example = example_train
        init_mlflow_store(example.TrainConfig().project, work / "mlartifacts")
        data = example.prepare_example_data(work / "data" / "breast_cancer.csv")
        print(f"Prefect server at {url} ({time.monotonic() - started:.1f} s); logs in {work}")
        load_before = os.getloadavg()[0]
        for mode in modes:
            started = time.monotonic()
            with serve_deployments(work, args.poll, mode) as log:
                print(f"\nServed {mode} ({time.monotonic() - started:.1f} s; runner and diag logs: {log})")
                print_header()
                samples[mode] = []
                for index in range(1, args.runs + 1):
                    sample = measure_one(index, example, data, work / "runs" / mode, args.timeout)
                    samples[mode].append(sample)
                    print_row(sample)
        load_after = os.getloadavg()[0]
    ok = print_summary(samples, args.poll, host, quiet, (load_before, load_after))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
