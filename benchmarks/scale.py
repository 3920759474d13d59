"""Load check of the scale-out configuration: many main runs submitted at once through the work pool.

What runs. The stack of `tests.helpers.scaleout` on loopback, every part real: PostgreSQL,
`prefect server start` on it, `--workers` process workers (each running at most
`--runs-per-worker` flow runs at once) pulling from the work pool of `deployments/prefect.yaml`,
an `mlflow server` on PostgreSQL (`--mlflow-workers`) with artifacts on S3, and moto as the S3
endpoint. The project is deployed with `prefect deploy`. Then `--runs` (default 200) runs of the
`train/train` deployment are created at once, each with its own `s3://` save_dir; every
completed main run emits `flexlock.run.completed`, whose trigger creates a `diag/train` run.

`--warm diag` serves the pool's `diag` queue (diag, relog-all, promote, audit) instead by
`--workers` runners of `flexlock-prefect serve --queue diag` beside the workers, as Running in
production suggests: each diag forks from a warm process. `--warm default --warm diag` serves
both queues so, with no process worker at all. Without `--warm`, every flow run is a new
interpreter started by a process worker: the baseline.

What is printed:
* **throughput**: save_dirs logged to MLflow per minute, from the first submission to the last
  diag run's end;
* **end-to-end**: per save_dir, from the main run's submission (this script's clock) to the end
  of its diag run (the Prefect server's clock, same machine): p50, p95, max. With every run
  submitted at once this is mostly the wait for a free slot;
* **diag lag**: per save_dir, from the end of its main run to the end of its diag run, both on
  the server's clock: how long a finished run waits to be in MLflow;
* **lost**: save_dirs whose main run completed but no diag run logged them; **duplicated**:
  save_dirs with more than one diag run; **not active once**: save_dirs without exactly one
  active MLflow run. Target: none lost, none duplicated.
* the main and diag runs that did not complete, by state;
* **CPU per save_dir logged**, from the first submission to the last diag's end, by part: each
  server, the workers or runners with their flow runs, moto, this script, and the rest of the
  machine (from /proc: each part's process groups, children they reaped included).

Run from the repository root (200 runs: about 30 minutes on 2 cores):

    python benchmarks/scale.py [--runs N] [--workers W] [--runs-per-worker L] [--warm QUEUE]

Logs of every server and worker are kept in `benchmarks/.work/scale/` (recreated each time).
This is not a test: pytest only collects `tests/`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from contextvars import copy_context
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from _common import (
    REPO_ROOT,
    WORK_ROOT,
    machine_cpu_seconds,
    machine_line,
    median,
    percentile,
    prepare_environment,
    process_group_cpu_seconds,
    read_all_flow_runs,
)

WORK = WORK_ROOT / "scale"
BUCKET = "s3://scale-benchmark"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# No AWS lookups beyond loopback: no instance metadata, no config or credentials of the machine.
OFFLINE_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Submission:
    flow_run_id: str
    at: float  # this script's clock, seconds since the epoch


def submit(save_dirs: Sequence[str], data: str) -> dict[str, Submission]:
    """Create one `train/train` flow run per save_dir, 8 at a time."""
    from prefect.deployments import run_deployment

    def one(save_dir: str) -> tuple[str, Submission]:
        at = time.time()
        overrides = [f"input_data={data}", f"save_dir={save_dir}", "model_name=''"]
        flow_run = run_deployment("train/train", parameters={"overrides": overrides}, timeout=0)
        return save_dir, Submission(str(flow_run.id), at)

    with ThreadPoolExecutor(8) as pool:  # each task in a copy of this thread's context: Prefect's settings
        futures = [pool.submit(copy_context().run, one, save_dir) for save_dir in save_dirs]
        return dict(future.result() for future in futures)


def wait_for_diags(submitted: dict[str, Submission], timeout_s: float) -> tuple[list, list]:
    """Poll until every submitted main run is final and as many diag runs are final as mains
    completed. The deployment's own cron runs (scheduled for 2 a.m.) are left out."""
    ids = {sub.flow_run_id for sub in submitted.values()}
    save_dirs = list(submitted)
    deadline = time.monotonic() + timeout_s
    while True:
        mains = [r for r in read_all_flow_runs("train/train") if str(r.id) in ids]
        diags = read_all_flow_runs("diag/train")
        completed = sum(r.state.is_completed() for r in mains)
        final_mains = sum(r.state.is_final() for r in mains)
        final_diags = sum(r.state.is_final() for r in diags)
        log(f"main runs final {final_mains}/{len(save_dirs)} ({completed} completed), diag runs final {final_diags}")
        if final_mains == len(save_dirs) and final_diags >= completed:
            return mains, diags
        if time.monotonic() > deadline:
            log(f"timeout after {timeout_s:.0f} s")
            return mains, diags
        time.sleep(10)


def active_counts(save_dirs: Sequence[str]) -> Counter:
    from mlflow import MlflowClient

    from flexlock_prefect.lock import logical_run_key
    from flexlock_prefect.tracking.supersede import runs_of
    from flexlock_prefect.tracking.tags import ACTIVE, STATUS

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return Counter(
        {
            save_dir: sum(
                run.data.tags.get(STATUS) == ACTIVE for run in runs_of(client, experiments, logical_run_key(save_dir))
            )
            for save_dir in save_dirs
        }
    )


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by each part of the stack, by this script and by the machine."""

    parts: dict[str, float]
    script: float
    machine: float

    @classmethod
    def take(cls, process_groups: dict[str, list[int]]) -> CpuSample:
        parts = {part: sum(map(process_group_cpu_seconds, pgids)) for part, pgids in process_groups.items()}
        return cls(parts, time.process_time(), machine_cpu_seconds())


def print_cpu(before: CpuSample, after: CpuSample, logged: int) -> None:
    """CPU seconds per save_dir logged, by part, from submission to the end (stack start-up and
    the project's deployment left out)."""
    used = {part: after.parts[part] - before.parts[part] for part in after.parts}
    used["this script (submitting, polling)"] = after.script - before.script
    machine = after.machine - before.machine
    used["anything else on the machine"] = machine - sum(used.values())
    print(f"  CPU per save_dir logged ({machine / max(logged, 1):.1f} s in all, {machine:.0f} s for the burst):")
    for part, seconds in sorted(used.items(), key=lambda item: -item[1]):
        print(f"    {part:<40} {seconds / max(logged, 1):6.2f} s  ({seconds / machine:5.1%})")


def spread(seconds: Sequence[float]) -> str:
    if len(seconds) < 2:
        return "too few runs"
    return f"p50 {median(seconds):.0f} s, p95 {percentile(seconds, 95):.0f} s, max {max(seconds):.0f} s"


def report(
    save_dirs: Sequence[str],
    submitted: dict[str, Submission],
    mains: list,
    diags: list,
    cpu: tuple[CpuSample, ...],
    args,
) -> bool:
    main_by_id = {str(r.id): r for r in mains}
    completed_mains = {s for s, sub in submitted.items() if main_by_id[sub.flow_run_id].state.is_completed()}
    per_save_dir = Counter(r.parameters.get("save_dir") for r in diags)
    finished = {r.parameters["save_dir"]: r.end_time.timestamp() for r in diags if r.state.is_completed()}
    lost = sorted(s for s in completed_mains if s not in finished)
    duplicated = sorted(s for s, n in per_save_dir.items() if n > 1)
    active = active_counts(save_dirs)
    not_active_once = sorted(s for s in completed_mains if active[s] != 1)
    end_to_end = [finished[s] - submitted[s].at for s in finished if s in submitted]
    main_end = {s: main_by_id[sub.flow_run_id].end_time for s, sub in submitted.items()}
    lag = [finished[s] - main_end[s].timestamp() for s in finished if main_end.get(s)]
    span = max(finished.values(), default=time.time()) - min(sub.at for sub in submitted.values())

    print()
    print(f"scale-out load check — {platform.node()}, {machine_line()}")
    warm = f"queues {', '.join(args.warm)} served warm by runners" if args.warm else "no queue served warm"
    print(
        f"{len(save_dirs)} main runs submitted at once; {args.workers} process workers (or runners per warm queue) "
        f"× {args.runs_per_worker} flow runs; {warm}; MLflow server {args.mlflow_workers} workers; all on "
        "PostgreSQL, save_dirs on S3 (moto)"
    )
    print(f"  main runs   : {dict(Counter(r.state.type.value for r in mains))}")
    print(f"  diag runs   : {dict(Counter(r.state.type.value for r in diags))}")
    print(f"  throughput  : {len(finished) / span * 60:.1f} save_dirs logged per minute ({span:.0f} s in all)")
    print(f"  end-to-end  : {spread(end_to_end)} (main submitted → diag finished)")
    print(f"  diag lag    : {spread(lag)} (main finished → diag finished)")
    print(f"  lost        : {len(lost)} {lost[:5]}")
    print(f"  duplicated  : {len(duplicated)} {duplicated[:5]}")
    print(f"  not active once in MLflow: {len(not_active_once)} {not_active_once[:5]}")
    print_cpu(*cpu, len(finished))
    ok = not lost and not duplicated and not not_active_once
    print(f"  target (none lost, none duplicated): {'met' if ok else 'NOT met'}")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="main runs submitted at once (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="process workers (default 2)")
    parser.add_argument("--runs-per-worker", type=int, default=4, help="flow runs per worker at once (default 4)")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server processes (default 2)")
    parser.add_argument(
        "--warm",
        action="append",
        choices=("default", "diag"),
        default=[],
        help="serve this work queue warm, by --workers `flexlock-prefect serve --queue` runners instead of the "
        "process workers (repeatable; default: none, the workers run both queues)",
    )
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for the runs (default 7200)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    prepare_environment(Path(tempfile.mkdtemp(prefix="prefect-home-")), **OFFLINE_AWS)

    from flexlock_prefect import storage
    from flexlock_prefect.examples import train as example_train
    from tests.helpers.scaleout import scale_stack
    from tests.helpers.servers import start_s3_endpoint

    with ExitStack() as stack:
        moto, endpoint = start_s3_endpoint(WORK / "moto.log")
        stack.callback(moto.stop)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        fs, _ = storage.filesystem(BUCKET)
        fs.mkdir(BUCKET.removeprefix("s3://"))
        data = f"{BUCKET}/data/breast_cancer.csv"
        example = example_train
        storage.write_atomic(data, example.EXAMPLE_DATA.read_bytes())

        started = time.perf_counter()
        running = stack.enter_context(
            scale_stack(
                WORK,
                REPO_ROOT,
                f"{BUCKET}/mlflow-artifacts",
                env={"MLFLOW_S3_ENDPOINT_URL": endpoint, "FLEXLOCK_CACHE_DIR": str(WORK / "flexlock-cache")},
                workers=args.workers,
                runs_per_worker=args.runs_per_worker,
                mlflow_workers=args.mlflow_workers,
                warm_queues=args.warm,
            )
        )
        log(f"stack up and project deployed in {time.perf_counter() - started:.0f} s; logs in {WORK}")
        os.environ |= running.env
        stack.enter_context(running.prefect_client_settings())

        process_groups = {**running.process_groups, "S3 (moto)": [moto.process.pid]}
        save_dirs = [f"{BUCKET}/runs/{index:04d}" for index in range(args.runs)]
        cpu_before = CpuSample.take(process_groups)
        submitted = submit(save_dirs, data)
        times = [sub.at for sub in submitted.values()]
        log(f"{len(submitted)} main runs submitted in {max(times) - min(times):.1f} s")
        mains, diags = wait_for_diags(submitted, args.timeout)
        cpu = (cpu_before, CpuSample.take(process_groups))
        log(f"done at {datetime.now(UTC).isoformat(timespec='seconds')}")
        return 0 if report(save_dirs, submitted, mains, diags, cpu, args) else 1


if __name__ == "__main__":
    sys.exit(main())
