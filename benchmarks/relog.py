"""Benchmark of relogging to MLflow: flexlock-prefect's `relog` against FlexLock 0.10's
`mlflow_context`, on the same MLflow server, and the cost of one relog as an experiment grows.

Workload, generated once under `benchmarks/.work/relog/dirs/` and reused afterwards (save_dirs
already complete are kept):

* `--count` synthetic save_dirs (default 500), each with a `run.lock` written by `capture_run` from a
  config of 20 scalar params plus `save_dir` (no data inputs and no code repos, so no dataset
  inputs are logged: FlexLock 0.10 logs none either), a `metrics.json` of 10 numbers and one
  1 KiB `notes.txt`.
* FlexLock 0.10's `load_record` reads our run.lock as it is (a YAML mapping whose `config` key it
  flattens into params), so both sides relog the very same directories: 21 params each
  (20 + `save_dir`), 10 metrics, and the same three artifacts: `run.lock`, `notes.txt` and
  `metrics.json` (our default diag body `log_outputs` logs every top-level `.json`/`.txt` file, so
  the FlexLock loop logs `metrics.json` as an artifact too, to do the same work).

One `mlflow server` (SQLite backend, or with `--backend postgresql` a fresh PostgreSQL cluster of
`tests.helpers.scaleout`; local `--artifacts-destination`, loopback, `--server-workers`
processes, default one; job execution off) is started fresh under `benchmarks/.work/relog/server/`
and serves everything; its process group is stopped at the end. With `--backend local` there is
no server: both sides open a fresh SQLite store `benchmarks/.work/relog/server/mlflow.db` in their
own process (artifacts under `./mlruns` there), so what is timed is the client and the store
alone, and no HTTP requests are counted. `PREFECT_API_URL` is unset (and
`PREFECT_HOME` private), so `relog` takes no Prefect run locks; the output says so.

What is timed (wall clock, seconds, runs/s):

1. **FlexLock 0.10** in its own virtual environment `benchmarks/.work/venv-flexlock010`
   (`pip install flexlock==0.10.0`, plus `mlflow==<our version>` so both sides use the same MLflow
   client; created or completed on first use). A subprocess loops over the save_dirs:
   `with mlflow_context(save_dir, experiment_name="bench-flexlock010"): mlflow.log_metrics(...);
   mlflow.log_artifact(...)`, and times the loop itself (interpreter start-up and imports excluded).
   FlexLock 0.10 is sequential by design. Its loguru sink is raised to WARNING (ours logs nothing
   either).
2. **ours, workers=4** (the default): `relog(save_dirs, force=True, experiment="bench-ours")` with
   the default diag body.
3. **ours, workers=1**: the same into `bench-ours-w1`, one relog at a time: the per-relog
   comparison.

FlexLock runs first by default, so ours meets the bigger database (every run the store holds
makes the tag searches of both sides slower); `--order flexlock-last` reverses it. Both get
`MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true` (flexlock-prefect sets it while it ends a run; without it
MLflow spends one more request per run on printing a URL). HTTP requests are counted in each
process by wrapping `requests.Session.request` (MLflow's REST and artifact clients both go
through it) and reported per relog, by endpoint. In the two sequential passes (FlexLock's and
ours with one worker) the server's CPU is also read from /proc around every request, which
gives the server CPU per request by endpoint: where the server's time goes on each side.

Scale check: in a fresh experiment `bench-scale`, the median wall time of one
`relog([save_dir], force=True, workers=1)` of an already-logged save_dir (so each timed relog
supersedes one run, the usual case) over `--samples` different save_dirs, when the experiment
holds 100 runs and again when it holds 10,000. The filler runs are written straight into the
server's store with SQLAlchemy Core and MLflow's own table definitions
(`mlflow.store.tracking.dbmodels.models`), while the server is idle: 10,000 runs over HTTP would
take minutes, this takes seconds. Each filler run looks like a relogged one: FINISHED, tagged
with its own `flexlock.logical_run_key`/`flexlock.logical_run_id`, `flexlock.status=active`, a run
name, 20 params and 10 metrics (history and latest), so the tag searches a relog makes scan as
many rows as they would in a real experiment of that size.

Targets (from the issue): ours ≥ 3× FlexLock 0.10's runs/s (judged on the default workers=4);
one relog at 10,000 runs ≤ 1.5× one relog at 100 runs.

At the end the server's database and artifact directory are checked: every run FINISHED, exactly
one active run per logical run on the whole server, 21 params, 10 metrics and 4 artifacts per run
(the three files and the run.lock preview `run.lock.yaml` that MLflow's UI shows).

Run from the repository root:

    python benchmarks/relog.py               # 500 save_dirs: ~6 min on 2 cores (venv install not included)
    python benchmarks/relog.py --count 50    # ~1 min
    python benchmarks/relog.py --order flexlock-last
    python benchmarks/relog.py --backend local   # no server: a SQLite store in each process

This is not a test: pytest only collects `tests/`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    REPO_ROOT,
    WORK_ROOT,
    Flexlock010Venv,
    RequestCounter,
    endpoint_of,
    group_pids,
    machine_line,
    median,
    pids_cpu_seconds,
    prepare_environment,
    process_group_cpu_seconds,
)

WORK_DIR = WORK_ROOT / "relog"
PARAMS = 20
METRICS = 10
NOTE_BYTES = 1024
ARTIFACTS_PER_RUN = 3  # run.lock, metrics.json, notes.txt
OURS_ARTIFACTS_PER_RUN = ARTIFACTS_PER_RUN + 1  # and the preview run.lock.yaml that MLflow's UI shows
EXPERIMENT_FLEXLOCK = "bench-flexlock010"
EXPERIMENT_OURS = "bench-ours"
EXPERIMENT_OURS_W1 = "bench-ours-w1"
EXPERIMENT_SCALE = "bench-scale"
SMALL_EXPERIMENT = 100
BIG_EXPERIMENT = 10_000
TARGET_SPEEDUP = 3.0
TARGET_SCALE_RATIO = 1.5
FILL_CHUNK = 1_000
FILLER_TAG = "bench.filler"


def log(message: str) -> None:
    print(f"[relog-bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment


def prefect_api_state() -> str:
    from flexlock_prefect.concurrency import prefect_api_configured

    if prefect_api_configured():
        raise SystemExit("a Prefect API is configured although PREFECT_API_URL was unset: stop")
    return "PREFECT_API_URL unset: no Prefect run locks taken (relog's lock is a no-op)"


@dataclass(frozen=True)
class Server:
    """Where both sides log: an MLflow server, or (`pgid` None) a local store that each process
    opens itself, `url` being then the store's SQLAlchemy URL."""

    url: str
    pgid: int | None
    store: str  # SQLAlchemy URL of the backend store (PostgreSQL: password in PGPASSWORD)
    artifacts: Path  # the artifact root: <experiment id>/<run id>/artifacts below it

    def cpu_seconds(self) -> float:
        """CPU of the server's processes (its process group), from /proc; 0 for a local store."""
        return process_group_cpu_seconds(self.pgid) if self.pgid is not None else 0.0

    def pids(self) -> list[int]:
        """The server's processes: sampling them alone is cheap enough to do around every request."""
        return group_pids(self.pgid) if self.pgid is not None else []


@contextmanager
def mlflow_server(home: Path, workers: int = 1, backend: str = "sqlite") -> Iterator[Server]:
    """A fresh `mlflow server` (local artifacts) on a free loopback port, on SQLite or on a fresh
    PostgreSQL cluster, stopped as a group; or, for `local`, a fresh SQLite store with no server."""
    from tests.helpers.scaleout import postgres
    from tests.helpers.servers import start_mlflow_server

    shutil.rmtree(home, ignore_errors=True)
    (home / "artifacts").mkdir(parents=True)
    with ExitStack() as stack:
        store = f"sqlite:///{home / 'mlflow.db'}"
        if backend == "local":
            yield local_store(home, store)
            return
        if backend == "postgresql":
            cluster = stack.enter_context(postgres(home))
            cluster.create_database("mlflow")
            os.environ.update(cluster.env)  # the server, and this process's store checks, read PGPASSWORD
            store = cluster.url("mlflow")
        started = time.perf_counter()
        server, url = start_mlflow_server(
            home, artifacts_destination=str(home / "artifacts"), backend_store_uri=store, workers=workers
        )
        stack.callback(server.stop)
        log(f"mlflow server ready at {url} in {time.perf_counter() - started:.1f} s ({backend})")
        os.environ["MLFLOW_TRACKING_URI"] = url
        yield Server(url, server.process.pid, store, home / "artifacts")
    log("mlflow server stopped")


def local_store(home: Path, store: str) -> Server:
    """MLflow's SQLite store opened by each client in its own process, as with
    `MLFLOW_TRACKING_URI=sqlite:///mlflow.db` and no server. Its default artifact root is
    `./mlruns`, so this process (and FlexLock's, its child) works from `home`. The schema is made
    here, before anything is timed: opening a new database runs MLflow's migrations."""
    from mlflow import MlflowClient

    os.chdir(home)
    os.environ["MLFLOW_TRACKING_URI"] = store
    MlflowClient().search_experiments()
    log(f"local store {store}, artifacts under {home / 'mlruns'}")
    return Server(store, None, store, home / "mlruns")


# --------------------------------------------------------------------------- workload


def config_of(index: int, save_dir: Path) -> dict[str, Any]:
    """20 scalar params (floats, ints, strings, bools) and the save_dir."""
    kinds: list[Callable[[int], Any]] = [
        lambda j: round(0.001 * (index + 1) * (j + 1), 6),
        lambda j: index * 100 + j,
        lambda j: f"value-{j}-{index % 7}",
        lambda j: (index + j) % 2 == 0,
    ]
    params = {f"param_{j:02d}": kinds[j % len(kinds)](j) for j in range(PARAMS)}
    return params | {"save_dir": str(save_dir)}


def metrics_of(index: int) -> dict[str, float]:
    return {f"metric_{k}": round((index + 1) / (k + 3), 6) for k in range(METRICS)}


def make_save_dir(save_dir: Path, index: int) -> None:
    """run.lock (via capture_run), metrics.json and notes.txt; kept if already complete."""
    from flexlock_prefect.capture import capture_run

    if all((save_dir / name).is_file() for name in ("run.lock", "metrics.json", "notes.txt")):
        return
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "metrics.json").write_text(json.dumps(metrics_of(index)))
    (save_dir / "notes.txt").write_text(f"synthetic run {index:06d}\n" * (NOTE_BYTES // 20))
    _, lock = capture_run(config_of(index, save_dir))
    lock.save()


def make_save_dirs(root: Path, prefix: str, count: int) -> list[str]:
    started = time.perf_counter()
    dirs = [root / f"{prefix}-{index:05d}" for index in range(count)]
    for index, save_dir in enumerate(dirs):
        make_save_dir(save_dir, index)
    log(f"{count} save_dirs {prefix}-* ready in {time.perf_counter() - started:.1f} s")
    return [str(d) for d in dirs]


# --------------------------------------------------------------------------- counting requests


# --------------------------------------------------------------------------- ours


@dataclass
class Pass:
    """One timed relog of every save_dir by one implementation."""

    name: str
    short: str
    runs: int
    seconds: float
    requests: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    request_cpu_s: Counter[str] = field(default_factory=Counter)  # server CPU by endpoint (sequential passes)

    @property
    def sequential(self) -> bool:
        return bool(self.request_cpu_s)

    @property
    def request_cpu_ms_per_run(self) -> float:
        """The server CPU of this pass's requests per relog, ms (sequential passes)."""
        return sum(self.request_cpu_s.values()) * 1000 / self.runs

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds

    @property
    def requests_per_run(self) -> float:
        return sum(self.requests.values()) / self.runs


def relog_ours(save_dirs: Sequence[str], experiment: str, workers: int, server: Server) -> Pass:
    """Our relog of `save_dirs`; with one worker, the server's CPU is attributed to each request."""
    from flexlock_prefect.tracking import relog

    counter = RequestCounter(partial(pids_cpu_seconds, server.pids()) if workers == 1 else None)
    with counter.installed():
        cpu, started = time.process_time(), time.perf_counter()
        outcomes = relog(save_dirs, force=True, experiment=experiment, workers=workers)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    bad = [o for o in outcomes if o.outcome != "relogged"]
    if bad:
        raise RuntimeError(f"{len(bad)} save_dirs not relogged, e.g. {bad[0]}")
    return Pass(
        f"flexlock-prefect relog, workers={workers}",
        f"ours w={workers}",
        len(outcomes),
        elapsed,
        counter.counts,
        cpu,
        request_cpu_s=counter.cpu,
    )


# --------------------------------------------------------------------------- FlexLock 0.10

FLEXLOCK010_PRELUDE = """from __future__ import annotations
import json, os, sys, threading, time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
"""
"""What `endpoint_of`, `pids_cpu_seconds` and `RequestCounter`, whose sources the script carries, need
in FlexLock's venv."""

FLEXLOCK010_LOOP = r"""
from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")
import mlflow
from flexlock.mlflow import mlflow_context

spec = json.loads(open(sys.argv[1]).read())


def numbers(save_dir):
    with open(os.path.join(save_dir, "metrics.json")) as handle:
        return {key: float(value) for key, value in json.load(handle).items()}


counter = RequestCounter(lambda: pids_cpu_seconds(spec["server_pids"]))
with counter.installed():
    cpu, started = time.process_time(), time.perf_counter()
    for save_dir in spec["save_dirs"]:
        with mlflow_context(save_dir, experiment_name=spec["experiment"]):
            mlflow.log_metrics(numbers(save_dir))
            for name in spec["artifacts"]:
                mlflow.log_artifact(os.path.join(save_dir, name))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({
    "seconds": elapsed, "cpu": cpu, "runs": len(spec["save_dirs"]),
    "requests": counter.counts, "request_cpu": counter.cpu,
}))
"""


def relog_flexlock010(
    venv: Flexlock010Venv, save_dirs: Sequence[str], experiment: str, work: Path, server: Server
) -> Pass:
    """FlexLock 0.10's loop over `save_dirs`, run and timed in its venv (which holds our MLflow client)."""
    spec = work / "flexlock010-spec.json"
    spec.write_text(
        json.dumps(
            {
                "save_dirs": list(save_dirs),
                "experiment": experiment,
                "artifacts": ["metrics.json", "notes.txt"],
                "server_pids": server.pids(),
            }
        )
    )
    shared = (endpoint_of, pids_cpu_seconds, RequestCounter)
    script = FLEXLOCK010_PRELUDE + "".join(map(inspect.getsource, shared)) + FLEXLOCK010_LOOP
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    report = venv.run(script, str(spec), env=env, stderr_log=work / "flexlock010-stderr.log")
    return Pass(
        "FlexLock 0.10 mlflow_context (sequential)",
        "FlexLock 0.10",
        report["runs"],
        report["seconds"],
        Counter(report["requests"]),
        report["cpu"],
        request_cpu_s=Counter(report["request_cpu"]),
    )


# --------------------------------------------------------------------------- scale check


def with_server_cpu(server: Server, measure: Callable[[], Pass]) -> Pass:
    """Run one pass and add the server CPU it cost."""
    before = server.cpu_seconds()
    result = measure()
    result.server_cpu_s = server.cpu_seconds() - before
    log(f"  {result.seconds:.1f} s")
    return result


@dataclass
class ScalePoint:
    runs_in_experiment: int
    seconds: list[float]
    requests: Counter[str]
    request_seconds: Counter[str]

    @property
    def median_ms(self) -> float:
        return median(self.seconds) * 1000


def query(store: str, sql: str, **params: Any) -> list[tuple]:
    """Rows of one read-only query on the server's store (SQLite or PostgreSQL)."""
    import sqlalchemy as sa

    engine = sa.create_engine(store)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def experiment_run_count(store: str, experiment_id: str) -> int:
    return query(store, "SELECT COUNT(*) FROM runs WHERE experiment_id = :id", id=int(experiment_id))[0][0]


def fill_experiment(store: str, experiment_id: str, artifact_location: str, count: int) -> float:
    """Insert `count` finished filler runs, each shaped like a relogged run, straight into the
    server's store with MLflow's table definitions; returns the seconds it took."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    from flexlock_prefect.lock import logical_run_key

    started = time.perf_counter()
    engine = sa.create_engine(store)
    now = int(time.time() * 1000)
    try:
        for chunk_start in range(0, count, FILL_CHUNK):
            runs, tags, params, metrics = [], [], [], []
            for _ in range(min(FILL_CHUNK, count - chunk_start)):
                run_id = uuid.uuid4().hex
                logical_id = f"file:///synthetic/filler/{run_id}"
                runs.append({
                    "run_uuid": run_id, "name": f"filler-{run_id[:8]}", "source_type": "JOB",
                    "source_name": "flexlock-prefect", "entry_point_name": "", "user_id": "bench",
                    "status": "FINISHED", "start_time": now - 2000, "end_time": now - 1000, "deleted_time": None,
                    "source_version": "", "lifecycle_stage": "active",
                    "artifact_uri": f"{artifact_location}/{run_id}/artifacts", "experiment_id": int(experiment_id),
                })  # fmt: skip
                run_tags = {
                    "flexlock.logical_run_id": logical_id,
                    "flexlock.logical_run_key": logical_run_key(logical_id),
                    "flexlock.status": "active",
                    "flexlock.diag_version": "0" * 16,
                    "mlflow.runName": f"filler-{run_id[:8]}",
                    FILLER_TAG: "true",
                }
                tags += [{"key": k, "value": v, "run_uuid": run_id} for k, v in run_tags.items()]
                params += [{"key": f"param_{j:02d}", "value": str(j), "run_uuid": run_id} for j in range(PARAMS)]
                metrics += [
                    {
                        "key": f"metric_{k}",
                        "value": 0.5,
                        "timestamp": now,
                        "step": 0,
                        "is_nan": False,
                        "run_uuid": run_id,
                    }
                    for k in range(METRICS)
                ]
            with engine.begin() as conn:
                conn.execute(sa.insert(SqlRun.__table__), runs)
                conn.execute(sa.insert(SqlTag.__table__), tags)
                conn.execute(sa.insert(SqlParam.__table__), params)
                conn.execute(sa.insert(SqlMetric.__table__), metrics)
                conn.execute(sa.insert(SqlLatestMetric.__table__), metrics)
    finally:
        engine.dispose()
    return time.perf_counter() - started


def time_one_relog(save_dir: str, experiment: str) -> tuple[float, RequestCounter]:
    from flexlock_prefect.tracking import relog

    counter = RequestCounter()
    with counter.installed():
        started = time.perf_counter()
        (outcome,) = relog([save_dir], force=True, experiment=experiment, workers=1)
        elapsed = time.perf_counter() - started
    if outcome.outcome != "relogged" or len(outcome.superseded_run_ids) != 1:
        raise RuntimeError(f"scale relog of {save_dir}: expected one superseded run, got {outcome}")
    return elapsed, counter


def scale_point(store: str, experiment_id: str, artifact_location: str, target: int, dirs: Sequence[str]) -> ScalePoint:
    """Fill the experiment so that it holds `target` runs once `dirs` are logged, then time a
    superseding relog of each of them."""
    from flexlock_prefect.tracking import relog

    filler = target - len(dirs) - experiment_run_count(store, experiment_id)
    if filler > 0:
        log(
            f"wrote {filler} filler runs into the store in "
            f"{fill_experiment(store, experiment_id, artifact_location, filler):.1f} s"
        )
    relog(dirs, force=True, experiment=EXPERIMENT_SCALE, workers=1)  # the runs the timed relogs supersede
    runs = experiment_run_count(store, experiment_id)
    seconds: list[float] = []
    requests: Counter[str] = Counter()
    request_seconds: Counter[str] = Counter()
    for save_dir in dirs:
        elapsed, counter = time_one_relog(save_dir, EXPERIMENT_SCALE)
        seconds.append(elapsed)
        requests = counter.counts  # the same for every relog
        request_seconds.update({name: s / len(dirs) for name, s in counter.seconds.items()})
    log(f"experiment of {runs} runs: one relog " + ", ".join(f"{s * 1000:.0f}" for s in seconds) + " ms")
    return ScalePoint(runs, seconds, requests, request_seconds)


def scale_check(store: str, dirs: Sequence[str], samples: int) -> tuple[ScalePoint, ScalePoint]:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(EXPERIMENT_SCALE)
    location = client.get_experiment(experiment_id).artifact_location
    small = scale_point(store, experiment_id, location, SMALL_EXPERIMENT, dirs[:samples])
    big = scale_point(store, experiment_id, location, BIG_EXPERIMENT, dirs[samples : 2 * samples])
    return small, big


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    experiment: str
    runs: int
    finished: int
    logical_runs: int
    one_active_each: bool
    params: tuple[int, int]
    metrics: tuple[int, int]
    artifacts: tuple[int, int] | None

    def ok(self, expected_runs: int, logical_runs: int, artifacts: int) -> bool:
        per_run = self.params == (PARAMS + 1,) * 2 and self.metrics == (METRICS,) * 2
        files = self.artifacts is None or self.artifacts == (artifacts,) * 2
        return (
            self.runs == expected_runs and self.finished == expected_runs and self.logical_runs == logical_runs
            and self.one_active_each and per_run and files
        )  # fmt: skip


def check_experiment(store: str, artifacts: Path, name: str, key_tag: str, run_filter: str = "") -> Check:
    """What the store holds for one experiment; `run_filter` narrows it (SQL on `r`)."""
    [(experiment_id,)] = query(store, "SELECT experiment_id FROM experiments WHERE name = :name", name=name)
    where = f"r.experiment_id = {int(experiment_id)} {run_filter}"
    run_ids = [row[0] for row in query(store, f"SELECT r.run_uuid FROM runs r WHERE {where}")]
    [(finished,)] = query(store, f"SELECT COUNT(*) FROM runs r WHERE {where} AND r.status = 'FINISHED'")
    # One active run per logical run on the whole server: a later pass supersedes an earlier
    # pass's runs of the same save_dirs, in another experiment.
    actives = query(
        store,
        f"""SELECT k.value, SUM(CASE WHEN s.value = 'active' THEN 1 ELSE 0 END)
            FROM runs r JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = :key
            LEFT JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'flexlock.status'
            WHERE k.value IN (SELECT k2.value FROM runs r JOIN tags k2 ON k2.run_uuid = r.run_uuid AND k2.key = :key
                              WHERE {where})
            GROUP BY k.value""",
        key=key_tag,
    )
    files = [_artifact_files(artifacts / str(experiment_id) / run_id / "artifacts") for run_id in run_ids]
    return Check(
        name,
        len(run_ids),
        finished,
        len(actives),
        all(count == 1 for _, count in actives),
        _per_run_range(store, "params", where),
        _per_run_range(store, "latest_metrics", where),
        (min(files), max(files)) if files else None,
    )


def run_checks(server: Server, count: int, samples: int) -> list[tuple[Check, bool]]:
    """Each benchmark experiment as expected? The scale experiment's filler runs are left out."""
    store, artifacts = server.store, server.artifacts
    expected = [
        (EXPERIMENT_FLEXLOCK, "flexlock.dir", ARTIFACTS_PER_RUN),
        (EXPERIMENT_OURS, "flexlock.logical_run_key", OURS_ARTIFACTS_PER_RUN),
        (EXPERIMENT_OURS_W1, "flexlock.logical_run_key", OURS_ARTIFACTS_PER_RUN),
    ]
    results = []
    for name, key_tag, files in expected:
        check = check_experiment(store, artifacts, name, key_tag)
        results.append((check, check.ok(count, count, files)))
    relogged = f"AND r.run_uuid NOT IN (SELECT run_uuid FROM tags WHERE key = '{FILLER_TAG}')"
    scale = check_experiment(store, artifacts, EXPERIMENT_SCALE, "flexlock.logical_run_key", relogged)
    # each scale save_dir: one untimed relog, then the timed one that supersedes it
    return [*results, (scale, scale.ok(4 * samples, 2 * samples, OURS_ARTIFACTS_PER_RUN))]


def _per_run_range(store: str, table: str, where: str) -> tuple[int, int]:
    [(low, high)] = query(
        store,
        f"""SELECT MIN(n), MAX(n) FROM (SELECT COUNT(t.key) AS n FROM runs r
            LEFT JOIN {table} t ON t.run_uuid = r.run_uuid WHERE {where} GROUP BY r.run_uuid) AS per_run""",
    )
    return int(low or 0), int(high or 0)


def _artifact_files(path: Path) -> int:
    return sum(1 for item in path.rglob("*") if item.is_file()) if path.is_dir() else 0


# --------------------------------------------------------------------------- report


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def throughput_lines(passes: Sequence[Pass]) -> list[str]:
    base = passes[0].runs_per_s
    lines = [
        f"  {'implementation':<44}{'runs':>6}{'wall s':>9}{'runs/s':>8}{'vs 0.10':>9}{'req/run':>9}"
        f"{'client CPU s':>14}{'server CPU s':>14}"
    ]
    for p in passes:
        lines.append(
            f"  {p.name:<44}{p.runs:>6}{p.seconds:>9.2f}{p.runs_per_s:>8.2f}{p.runs_per_s / base:>8.2f}x"
            f"{p.requests_per_run:>9.1f}{p.client_cpu_s:>14.1f}{p.server_cpu_s:>14.1f}"
        )
    return lines


def endpoint_lines(passes: Sequence[Pass]) -> list[str]:
    """Requests per relog by endpoint; for the sequential passes also the server's CPU per request.
    No lines for a local store, which answers no requests."""
    names = sorted({name for p in passes for name in p.requests})
    if not names:
        return []
    sequential = [p for p in passes if p.sequential]
    lines = [
        f"  {'requests per relog, by endpoint':<40}"
        + "".join(f"{p.short:>16}" for p in passes)
        + "".join(f"{'server ms, ' + p.short:>26}" for p in sequential)
    ]
    for name in names:
        lines.append(
            f"  {name:<40}"
            + "".join(f"{p.requests.get(name, 0) / p.runs:>16.2f}" for p in passes)
            + "".join(f"{_ms_per_request(p, name):>26}" for p in sequential)
        )
    lines.append(
        f"  {'total':<40}"
        + "".join(f"{p.requests_per_run:>16.2f}" for p in passes)
        + "".join(f"{p.request_cpu_ms_per_run:>20.1f}/relog" for p in sequential)
    )
    return lines


def _ms_per_request(p: Pass, name: str) -> str:
    """The server's mean CPU ms per request of endpoint `name` in a sequential pass, or '-'."""
    count = p.requests.get(name, 0)
    return f"{p.request_cpu_s[name] * 1000 / count:.1f}" if count else "-"


def scale_lines(small: ScalePoint, big: ScalePoint) -> list[str]:
    lines = [f"  scale check: one relog (workers=1, supersedes one run), median of {len(small.seconds)}"]
    for point in (small, big):
        lines.append(
            f"    experiment of {point.runs_in_experiment:>6} runs: {point.median_ms:7.1f} ms"
            f"  (min {min(point.seconds) * 1000:.0f}, max {max(point.seconds) * 1000:.0f}; "
            f"{sum(point.requests.values())} requests)"
        )
    lines.append(f"    ratio: {big.median_ms / small.median_ms:.2f}x")
    lines.append(
        f"    {'mean ms per relog, by endpoint':<40}{small.runs_in_experiment:>10}{big.runs_in_experiment:>10}"
    )
    for name in sorted(set(small.request_seconds) | set(big.request_seconds)):
        lines.append(
            f"    {name:<40}{small.request_seconds.get(name, 0) * 1000:>10.1f}"
            f"{big.request_seconds.get(name, 0) * 1000:>10.1f}"
        )
    return lines


def check_lines(checks: Sequence[tuple[Check, bool]]) -> list[str]:
    lines = [
        "  store checks (all runs FINISHED, one active run per logical run on the server, 21 params, 10 metrics, "
        "3 artifacts, ours 4 with the run.lock preview):"
    ]
    for check, ok in checks:
        lines.append(
            f"    {check.experiment:<18} runs {check.runs:>5}, finished {check.finished:>5}, logical runs "
            f"{check.logical_runs:>5}, one active each: {check.one_active_each}, params {check.params}, "
            f"metrics {check.metrics}, artifacts {check.artifacts}: {'OK' if ok else 'UNEXPECTED'}"
        )
    return lines


def markdown_lines(passes: Sequence[Pass], small: ScalePoint, big: ScalePoint) -> list[str]:
    base = passes[0].runs_per_s
    lines = [
        f"| relog of {passes[0].runs} save_dirs (21 params, 10 metrics, 3 artifacts each) "
        "| runs/s | vs FlexLock 0.10 | HTTP requests/run |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {p.name} | {p.runs_per_s:.1f} | {p.runs_per_s / base:.2f}× | {p.requests_per_run:.1f} |" for p in passes
    ]
    lines += [
        "",
        "| one relog (workers=1) in an experiment of | median ms | HTTP requests |",
        "| --- | ---: | ---: |",
        f"| {small.runs_in_experiment:,} runs | {small.median_ms:.0f} | {sum(small.requests.values())} |",
        f"| {big.runs_in_experiment:,} runs | {big.median_ms:.0f} | {sum(big.requests.values())} |",
        f"| ratio | {big.median_ms / small.median_ms:.2f}× | |",
    ]
    sequential = [p for p in passes if p.sequential]
    if not sequential:  # a local store: no requests
        return lines
    names = sorted({name for p in sequential for name in p.requests}, key=lambda n: -sequential[0].requests.get(n, 0))
    lines += [
        "",
        "| request | " + " | ".join(f"{p.short}: per relog | server CPU ms each" for p in sequential) + " |",
        "| --- |" + " ---: | ---: |" * len(sequential),
    ]
    lines += [
        f"| `{name}` | "
        + " | ".join(f"{p.requests.get(name, 0) / p.runs:.2f} | {_ms_per_request(p, name)}" for p in sequential)
        + " |"
        for name in names
    ]
    lines.append(
        "| **per relog** | "
        + " | ".join(f"{p.requests_per_run:.1f} | {p.request_cpu_ms_per_run:.0f}" for p in sequential)
        + " |"
    )
    return lines


def report(
    header: list[str],
    passes: Sequence[Pass],
    scale: tuple[ScalePoint, ScalePoint],
    checks: Sequence[tuple[Check, bool]],
    workers: int,
) -> str:
    """`passes`: FlexLock 0.10, ours with the default workers, ours with workers=1."""
    flexlock, ours, ours_w1 = passes
    small, big = scale
    speedup = ours.runs_per_s / flexlock.runs_per_s
    speedup_w1 = ours_w1.runs_per_s / flexlock.runs_per_s
    scale_ratio = big.median_ms / small.median_ms
    targets = [
        f"target: ours (workers={workers}, the default) >= {TARGET_SPEEDUP:.0f}x FlexLock 0.10's runs/s: "
        f"{speedup:.2f}x, {met(speedup >= TARGET_SPEEDUP)} (workers=1: {speedup_w1:.2f}x)",
        f"target: one relog in an experiment of {big.runs_in_experiment:,} runs <= {TARGET_SCALE_RATIO}x one in "
        f"{small.runs_in_experiment:,}: {scale_ratio:.2f}x, {met(scale_ratio <= TARGET_SCALE_RATIO)}",
    ]
    return "\n".join(
        [
            *header, "", *throughput_lines(passes), "", *endpoint_lines(passes), "", *scale_lines(small, big),
            "", *check_lines(checks), "", *(f"  {t}" for t in targets), "", "Markdown (README):", "",
            *markdown_lines(passes, small, big), "", *(f"- {t}" for t in targets),
        ]
    )  # fmt: skip


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=500, help="save_dirs relogged by each implementation (default 500)"
    )
    parser.add_argument("--samples", type=int, default=5, help="relogs timed per scale point (default 5)")
    parser.add_argument(
        "--order",
        choices=["flexlock-first", "flexlock-last"],
        default="flexlock-first",
        help="FlexLock 0.10 before ours (default: ours meets the bigger store) or after",
    )
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help="where save_dirs and the server live")
    parser.add_argument(
        "--server-workers", type=int, default=1, help="processes of the MLflow server (default 1, as in the tests)"
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "local"],
        default="sqlite",
        help="the MLflow server's store: SQLite (default, as in the tests) or a fresh PostgreSQL cluster; "
        "local: no server, each side opens a SQLite store itself (MLFLOW_TRACKING_URI=sqlite:///...)",
    )
    args = parser.parse_args(argv)

    work: Path = args.work_dir.resolve()  # the local store works from its own directory
    work.mkdir(parents=True, exist_ok=True)
    # No Prefect API: `relog` then takes no run locks. One request fewer per run without MLflow's URL print.
    prepare_environment(work / "prefect-home", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    import mlflow

    from flexlock_prefect.settings import get_settings

    relog_workers = get_settings().relog_workers

    venv = Flexlock010Venv()
    versions = venv.ensure(log, {"mlflow": mlflow.__version__})
    dirs = make_save_dirs(work / "dirs", "run", args.count)
    scale_dirs = make_save_dirs(work / "dirs", "scale", 2 * args.samples)
    prefect_note = prefect_api_state()
    load_before = os.getloadavg()[0]
    server_home = work / "server"
    with mlflow_server(server_home, args.server_workers, args.backend) as server:
        measures: dict[str, Callable[[], Pass]] = {
            "flexlock010": lambda: relog_flexlock010(venv, dirs, EXPERIMENT_FLEXLOCK, work, server),
            "ours": lambda: relog_ours(dirs, EXPERIMENT_OURS, relog_workers, server),
            "ours-w1": lambda: relog_ours(dirs, EXPERIMENT_OURS_W1, 1, server),
        }
        order = list(measures) if args.order == "flexlock-first" else ["ours", "ours-w1", "flexlock010"]
        passes: dict[str, Pass] = {}
        for name in order:
            log(f"{name}: {args.count} relogs")
            passes[name] = with_server_cpu(server, measures[name])
        log("scale check")
        scale = scale_check(server.store, scale_dirs, args.samples)
        checks = run_checks(server, args.count, args.samples)
    header = [
        f"Relog benchmark: {args.count} synthetic save_dirs ({PARAMS} params + save_dir, {METRICS} metrics, "
        f"1 KiB notes.txt; no data inputs)",
        f"  machine: {machine_line()}; 1-min load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        f"  MLflow {mlflow.__version__} client (ours) / FlexLock {versions['flexlock']} with MLflow "
        f"{versions['mlflow']} client ({venv.path.relative_to(REPO_ROOT)})",
        (
            f"  server: mlflow server --workers {args.server_workers}, {args.backend}, local artifacts, {server.url}"
            " (server CPU: the MLflow processes, not PostgreSQL's)"
            if server.pgid is not None
            else f"  no server: a local SQLite store {server.url} opened by each side's process (no HTTP requests)"
        ),
        f"  {prefect_note}",
        f"  order of the passes: {', '.join(order)} (each meets the runs of the ones before in the store)",
    ]
    print(report(header, [passes[name] for name in measures], scale, checks, relog_workers))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
