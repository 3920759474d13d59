"""Where one diag run's time goes: in a new interpreter (as Prefect starts a flow run by default)
and in a fork of a warm process (as `serve_pipelines` starts it, `flexlock_prefect.warm`).

Workload: `--runs` main runs of the example flow `train` (`model_name=''`: the model is logged,
not registered, as in `trigger_latency.py`), each into its own save_dir, in this process. Then each
save_dir gets one example diag run (`flexlock_prefect.examples.diag.diag`), alternately:

* **new interpreter**: `python -c` that imports the diag and runs it, as a spawned flow-run
  process does (interpreter start-up included);
* **warm fork**: a child of a multiprocessing fork server that preloaded Prefect's engine, the
  diag's module and the example warm-up (`flexlock_prefect.examples.warmup`), as a served flow
  run forks from one.

Inside each child the phases are timed (wall and CPU of the process) by wrapping the functions
that do them, and the HTTP requests are counted per server: MLflow's with `_common.RequestCounter`
(`requests.Session.request`, as the relog benchmark counts them), Prefect's by wrapping httpx's
`Client.send`/`AsyncClient.send` (events go over a websocket and are not counted). The phases:

* **imports**: the diag's module and what it imports (Prefect, MLflow), in the child;
* **flow start**: from calling the flow to its body (the flow run created and set Running);
* **skip check**: `current_active` (is the active run up to date?);
* **open run**: creating the MLflow run and logging the record (params, datasets, run.lock);
* **body: outputs**: `log_outputs` (metrics and files);
* **body: model**: `mlflow.sklearn.log_model`;
* **commit**: ending the run and tagging it active (supersession);
* **link + event**: the Prefect artifact and `flexlock.run.relogged`;
* **flow end**: from the body's return to the flow's (final state, logs flushed).

The warm fork runs the flow the way `measure` calls it, not through a runner: without the
cloudpickled flow, the control channel and the settings a served run's process rebuilds, so it
is a lower bound of a served warm run (`trigger_latency.py` measures the served path). The fork
server preloads before the first timed run.

Set-up under `benchmarks/.work/diag_phases/` (recreated each time): `prefect server start` (SQLite,
loopback, no UI) and `mlflow server --workers 1` (SQLite, local artifacts), both on loopback, both
stopped at the end. Medians over the runs of each kind.

    python benchmarks/diag_phases.py [--runs N]   # 6 runs (3 of each kind): ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import WORK_ROOT, RequestCounter, machine_line, median, prepare_environment

WORK_DIR = WORK_ROOT / "diag_phases"
PHASES = (
    "imports",
    "flow start",
    "skip check",
    "open run",
    "body: outputs",
    "body: model",
    "commit",
    "link + event",
    "flow end",
)
# The functions whose calls are phases: (module, attribute) -> phase. Each is patched where its
# callers look it up.
TIMED = {
    ("flexlock_prefect.tracking.relog", "current_active"): "skip check",
    ("flexlock_prefect.tracking.supersede", "log_record"): "open run",
    ("flexlock_prefect.examples.diag", "log_outputs"): "body: outputs",
    ("mlflow.sklearn", "log_model"): "body: model",
    ("flexlock_prefect.tracking.supersede", "_promote"): "commit",
    ("flexlock_prefect.diag", "publish_mlflow_link"): "link + event",
    ("flexlock_prefect.events", "emit_relogged"): "link + event",
}


# --------------------------------------------------------------------------- in the child


class Clock:
    """Wall and CPU seconds per phase, and HTTP requests per server."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {}
        self.requests: Counter[str] = Counter()

    def add(self, phase: str, wall: float, cpu: float) -> None:
        spent = self.phases.setdefault(phase, [0.0, 0.0])
        spent[0] += wall
        spent[1] += cpu

    def timed(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - wall, time.process_time() - cpu)

        return wrapper

    def count(self, server: str, method: str, url: str) -> None:
        path = urlsplit(str(url)).path
        self.requests[f"{server} {method.upper()} {path.split('/api/', 1)[-1]}"] += 1


def measure(save_dir: str) -> dict[str, Any]:
    """Import and run the example diag on `save_dir` with every phase timed; what was measured."""
    import importlib

    clock = Clock()
    wall, cpu = time.perf_counter(), time.process_time()
    from flexlock_prefect.examples import diag as example

    clock.add("imports", time.perf_counter() - wall, time.process_time() - cpu)
    _count_prefect_requests(clock)
    for (module, name), phase in TIMED.items():
        target = importlib.import_module(module)
        setattr(target, name, clock.timed(phase, getattr(target, name)))
    body_bounds: dict[str, tuple[float, float]] = {}
    run_body = example.log_example_run

    def body(save_dir: str, run: Any) -> None:
        body_bounds["start"] = (time.perf_counter(), time.process_time())
        try:
            run_body(save_dir, run)
        finally:
            body_bounds["end"] = (time.perf_counter(), time.process_time())

    example.log_example_run = body
    wall, cpu = time.perf_counter(), time.process_time()
    with RequestCounter().installed() as mlflow_requests:
        run_id = example.diag(save_dir=save_dir)
    end_wall, end_cpu = time.perf_counter(), time.process_time()
    clock.requests.update({f"MLflow {endpoint}": n for endpoint, n in mlflow_requests.counts.items()})
    inner = {k: v for k, v in clock.phases.items() if k != "imports"}
    before_body = body_bounds["start"]
    # the flow's own share: from the call to the body, less the skip check and the record, which precede it
    clock.add(
        "flow start",
        before_body[0] - wall - sum(inner.get(p, [0, 0])[0] for p in ("skip check", "open run")),
        before_body[1] - cpu - sum(inner.get(p, [0, 0])[1] for p in ("skip check", "open run")),
    )
    after = ("commit", "link + event")
    clock.add(
        "flow end",
        end_wall - body_bounds["end"][0] - sum(inner.get(p, [0, 0])[0] for p in after),
        end_cpu - body_bounds["end"][1] - sum(inner.get(p, [0, 0])[1] for p in after),
    )
    return {"run_id": run_id, "phases": clock.phases, "requests": dict(clock.requests)}


def _count_prefect_requests(clock: Clock) -> None:
    import httpx

    client_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> Any:
        clock.count("Prefect", request.method, str(request.url))
        return client_send(self, request, **kwargs)

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        clock.count("Prefect", request.method, str(request.url))
        return await async_send(self, request, **kwargs)

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]


def _measure_into(save_dir: str, out: str) -> None:
    Path(out).write_text(json.dumps(measure(save_dir)))


# --------------------------------------------------------------------------- in this process


def run_cold(save_dir: str, out: Path) -> float:
    """One diag in a new interpreter; its wall time from start to exit."""
    code = "import sys; sys.path.insert(0, sys.argv[3]); import diag_phases; diag_phases._measure_into(*sys.argv[1:3])"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, save_dir, str(out), str(Path(__file__).parent)], check=True)
    return time.perf_counter() - started


def run_warm(context: multiprocessing.context.BaseContext, save_dir: str, out: Path) -> float:
    """One diag in a fork of the warm fork server; its wall time from start to exit."""
    started = time.perf_counter()
    child = context.Process(target=_measure_into, args=(save_dir, str(out)))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the warm diag of {save_dir} exited {child.exitcode}")
    return time.perf_counter() - started


def print_report(results: dict[str, list[tuple[float, dict[str, Any]]]], host: str) -> None:
    kinds = list(results)
    print(f"\nOne example diag run, phase by phase (median seconds over {len(results[kinds[0]])} runs of each kind)")
    print(f"Machine: {host}")
    print(f"{'phase':<16}" + "".join(f"{kind + ' wall':>22}{'CPU':>8}" for kind in kinds))
    for phase in PHASES:
        cells = ""
        for kind in kinds:
            spent = [m["phases"].get(phase, [0.0, 0.0]) for _, m in results[kind]]
            cells += f"{median([s[0] for s in spent]):>22.2f}{median([s[1] for s in spent]):>8.2f}"
        print(f"{phase:<16}{cells}")
    rest = ""
    for kind in kinds:
        outside = [whole - sum(s[0] for s in m["phases"].values()) for whole, m in results[kind]]
        rest += f"{median(outside):>22.2f}{'':>8}"
    print(f"{'start, exit':<16}{rest}  (the process's wall time outside the phases: interpreter, fork, exit)")
    print(f"{'process, whole':<16}" + "".join(f"{median([w for w, _ in results[k]]):>22.2f}{'':>8}" for k in kinds))
    print("\nRequests of one diag run (the last of each kind), by server and endpoint:")
    for kind in kinds:
        requests = Counter(results[kind][-1][1]["requests"])
        by_server = Counter(key.split(" ", 1)[0] for key in requests.elements())
        print(f"  {kind}: " + ", ".join(f"{server} {n}" for server, n in sorted(by_server.items())))
    for key, n in sorted(results[kinds[-1]][-1][1]["requests"].items()):
        print(f"    {n:>3}  {key}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="diag runs, half of each kind (default 6)")
    args = parser.parse_args(argv)
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    prepare_environment(WORK_DIR / "prefect-client-home", PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING")
    import prefect

    from flexlock_prefect.examples import train
    from tests.helpers.servers import prefect_server_for_this_process, start_mlflow_server

    host = machine_line(f"Prefect {prefect.__version__}")
    with ExitStack() as services:
        services.enter_context(prefect_server_for_this_process(WORK_DIR / "prefect-server"))
        server, os.environ["MLFLOW_TRACKING_URI"] = start_mlflow_server(
            WORK_DIR / "mlflow", (WORK_DIR / "mlflow" / "artifacts").as_uri()
        )
        services.callback(server.stop)
        data = train.prepare_example_data(WORK_DIR / "data" / "breast_cancer.csv")
        save_dirs = [
            train.train(overrides=[f"input_data={data}", f"save_dir={WORK_DIR / 'runs' / f'r{i}'}", "model_name=''"])
            for i in range(args.runs)
        ]
        warm = multiprocessing.get_context("forkserver")
        warm.set_forkserver_preload(
            ["prefect.flow_engine", "flexlock_prefect.examples.diag", "flexlock_prefect.examples.warmup"]
        )
        warmed = warm.Process(target=os.getpid)  # the fork server preloads now, outside the timings
        warmed.start()
        warmed.join()
        results: dict[str, list[tuple[float, dict[str, Any]]]] = {"new interpreter": [], "warm fork": []}
        for index, save_dir in enumerate(save_dirs):
            out = WORK_DIR / f"measure-{index}.json"
            if index % 2 == 0:
                results["new interpreter"].append((run_cold(save_dir, out), json.loads(out.read_text())))
            else:
                results["warm fork"].append((run_warm(warm, save_dir, out), json.loads(out.read_text())))
            print(f"diag {index + 1}/{len(save_dirs)} done", flush=True)
    print_report(results, host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
