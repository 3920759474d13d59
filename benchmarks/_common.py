"""What the benchmark scripts share: paths, environment, machine line, percentiles and FlexLock 0.10's venv.

The scripts run as `python benchmarks/X.py`, which puts `benchmarks/` first on `sys.path`, so they
import this module as `_common`: no package `__init__.py` and no path line in each script. On import
it puts the repository root on `sys.path` once for all of them, so that `tests.helpers` imports and
this checkout's `flexlock_prefect` is the one measured, not another copy installed elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_ROOT = REPO_ROOT / "benchmarks" / ".work"  # git-ignored: workloads, servers, the venv
CHUNK = 1024**2
RACY_WINDOW_S = 2.5  # files newer than ~2 s are hashed but never stat-cached (capture.data.RACY_WINDOW_NS)
API_PAGE = 200  # the most rows the Prefect API returns per request
FLEXLOCK010_VERSION = "0.10.0"
FLEXLOCK010_VENV = WORK_ROOT / "venv-flexlock010"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# --------------------------------------------------------------------------- environment


def prepare_environment(prefect_home: Path, **env: str) -> None:
    """Isolate this process from any Prefect set-up of the machine, before Prefect is imported.

    Prefect reads its settings at import, and a benchmark must not talk to an API (or a profile)
    it did not start, send telemetry (Prefect's or MLflow's), or have Prefect start an ephemeral API behind its back.

    Args:
        prefect_home: a private `PREFECT_HOME`, created if missing, so no profile brings an API URL back.
        **env: the benchmark's own variables (console level, MLflow, AWS), set as well.
    """
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # MLflow's usage telemetry would leave loopback
    os.environ.update(env)


def machine_line(*extras: str) -> str:
    """The machine a benchmark ran on, in one line, the same facts in the same words for every benchmark.

    Timings mean little without the machine, and one wording lets runs of different benchmarks be
    compared. Both CPU counts are given: `os.cpu_count()` is the machine's, nproc (the affinity
    mask) what this process may use, which is less in a container.

    Args:
        *extras: what else matters to the benchmark (versions, settings), appended in order.
    """
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts = [
        _cpu_model(),
        f"{os.cpu_count()} CPUs (nproc {nproc})",
        _memory(),
        platform.machine(),
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
    ]
    return ", ".join([*facts, *extras])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        return f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 1024**3:.0f} GiB RAM"
    except (ValueError, OSError):
        return "unknown RAM"


# --------------------------------------------------------------------------- statistics


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of process group `pgid`, and of the children they
    reaped (a worker's finished flow runs, a server's finished workers), from /proc (Linux).

    A process that exited and was reaped by a process outside the group counts nowhere; every
    server and worker of the benchmarks starts in a group of its own and reaps its children.
    """
    return pids_cpu_seconds(group_pids(pgid))


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group `pgid`, from /proc (Linux)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid:  # after "(comm)": state(0) ppid(1) pgrp(2)
            pids.append(int(stat.parent.name))
    return pids


def pids_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of the given live processes and of the children they reaped, from /proc
    (Linux): cheap enough to sample around every request of a sequential client."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def machine_cpu_seconds() -> float:
    """User + system CPU of the whole machine since boot, every core (/proc/stat, Linux)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: int) -> float:
    """The `q`-th percentile (a whole number, 1 to 99) of `values`, inclusive of the values themselves.

    Inclusive: linear interpolation between the closest ranks (`statistics`' "inclusive" method),
    so a percentile never lies beyond the largest value, as the default "exclusive" method's p95 of
    a few samples does. The cut is made into the fewest equal parts (`q=90`: tenths), which gives
    bit for bit what `statistics.median` and `quantiles(n=10)` give.

    Returns:
        NaN for no values, the value itself for one.
    """
    if len(values) < 2:
        return values[0] if values else math.nan
    step = math.gcd(q, 100)
    return statistics.quantiles(values, n=100 // step, method="inclusive")[q // step - 1]


def median(values: Sequence[float]) -> float:
    """`statistics.median`, but NaN for no values: a report row with nothing measured still prints."""
    return percentile(values, 50)


# --------------------------------------------------------------------------- workloads


def write_random_file(path: Path, size: int, random_bytes: Callable[[int], bytes]) -> None:
    """Write `size` bytes from `random_bytes(n)` to `path`, a `CHUNK` at a time.

    The bytes go to a `.partial` file first, renamed at the end: an interrupted write leaves no file
    of the right size that the next run would take for a finished workload. `random_bytes` decides
    whether the content is the same on every run (a seeded `random.Random.randbytes`) or not.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as handle:
        for start in range(0, size, CHUNK):
            handle.write(random_bytes(min(CHUNK, size - start)))
    partial.replace(path)


def wait_until_settled(paths: Iterable[Path]) -> None:
    """Sleep until the newest of `paths` is older than `RACY_WINDOW_S`.

    flexlock hashes files modified within ~2 s but does not stat-cache them (their content may still
    change within the timestamp's resolution), so a freshly written workload would not show what a
    warm stat cache saves.
    """
    newest = max(max(st.st_mtime, st.st_ctime) for st in (path.stat() for path in paths))
    delay = newest + RACY_WINDOW_S - time.time()
    if delay > 0:
        time.sleep(delay)


# --------------------------------------------------------------------------- Prefect


def read_all_flow_runs(deployment: str) -> list[Any]:
    """Every flow run of the deployment `flow/deployment`, read `API_PAGE` at a time.

    The API returns at most one page per request, so reading once would silently miss runs.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        while True:
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                offset=len(runs),
                limit=API_PAGE,
            )
            runs += page
            if len(page) < API_PAGE:
                return runs


# --------------------------------------------------------------------------- FlexLock 0.10


@dataclass(frozen=True)
class Flexlock010Venv:
    """FlexLock 0.10, the baseline of the hashing and relog benchmarks, in a virtual environment of its own.

    Its own, because its dependencies must not meet ours; one, because it takes about a minute to
    build and serves both benchmarks, which check it and complete it as each needs.
    """

    path: Path = FLEXLOCK010_VENV

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def versions(self, names: Iterable[str]) -> dict[str, str]:
        """The installed version of each of the distributions `names` that is installed ({} without the venv)."""
        if not self.python.exists():
            return {}
        probe = (
            "import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for name in sys.argv[1:]:\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))"
        )
        result = subprocess.run([str(self.python), "-c", probe, *names], capture_output=True, text=True)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def ensure(self, log: Callable[[str], None], pins: Mapping[str, str] | None = None) -> dict[str, str]:
        """Create the venv if missing and pip-install whatever of flexlock 0.10 and `pins` it lacks.

        Args:
            log: where progress goes (a build takes about a minute).
            pins: further distributions and the versions wanted (the relog benchmark pins our MLflow).

        Returns:
            The installed versions of flexlock and of `pins`.

        Raises:
            RuntimeError: a step failed (with its stderr) or the venv still holds other versions;
                the caller decides whether a missing baseline stops the benchmark.
        """
        wanted = {"flexlock": FLEXLOCK010_VERSION, **(pins or {})}
        found = self.versions(wanted)
        if found == wanted:
            return found
        if not self.python.exists():
            log(f"creating {self.path}")
            _run_step([sys.executable, "-m", "venv", str(self.path)])
        missing = [f"{name}=={version}" for name, version in wanted.items() if found.get(name) != version]
        log(f"installing {' '.join(missing)} into {self.path} (about a minute)")
        started = time.perf_counter()
        _run_step([str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *missing])
        log(f"installed in {time.perf_counter() - started:.0f} s")
        found = self.versions(wanted)
        if found != wanted:
            raise RuntimeError(f"{self.path} holds {found}, wanted {wanted}")
        return found

    def run(self, script: str, *args: str, env: Mapping[str, str], stderr_log: Path | None = None) -> dict[str, Any]:
        """Run `script` with the venv's python; the JSON object on the last line of its stdout.

        The script times its own work and prints the result last, so interpreter start-up and imports
        stay out of the measurement and whatever FlexLock prints before is ignored.

        Args:
            script: Python source, run with `-c`, `args` as its `sys.argv[1:]`.
            env: the whole environment of the subprocess.
            stderr_log: where to keep its stderr, failed or not.

        Raises:
            RuntimeError: the script failed; the message ends with its stderr.
        """
        result = subprocess.run(
            [str(self.python), "-c", script, *args], capture_output=True, text=True, env=dict(env), check=False
        )
        if stderr_log is not None:
            stderr_log.write_text(result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"FlexLock 0.10 exited {result.returncode}:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def _run_step(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited {result.returncode}:\n{result.stderr.strip()}")


def endpoint_of(method: str, url: str) -> str:
    """A short name of one MLflow HTTP request: REST path or artifact upload/download."""
    from urllib.parse import urlsplit as _split

    path = _split(url).path
    if "/mlflow-artifacts/artifacts" in path:
        return f"{method} mlflow-artifacts (upload)" if method == "PUT" else f"{method} mlflow-artifacts"
    for prefix in ("/api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/2.0/mlflow/"):
        if path.startswith(prefix):
            return f"{method} {path[len(prefix) :]}"
    return f"{method} {path}"


class RequestCounter:
    """Counts `requests.Session.request` calls, and the seconds they took, by endpoint while
    installed (thread-safe).

    With `server_cpu` (a function giving the server's CPU seconds, e.g. `pids_cpu_seconds` of its
    processes), each request's server CPU is added to `cpu` by endpoint (else `cpu` stays empty): what the server spent
    answering it, but only for a client that sends one request at a time (a sequential pass), and
    accurate on average only (/proc counts in ticks of 10 ms)."""

    def __init__(self, server_cpu: Callable[[], float] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self._server_cpu = server_cpu
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[RequestCounter]:
        import requests

        original = requests.Session.request
        counter = self
        server_cpu = self._server_cpu

        def counting(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), server_cpu() if server_cpu else 0.0
            try:
                return original(session, method, url, *args, **kwargs)
            finally:
                elapsed, endpoint = time.perf_counter() - started, endpoint_of(method, url)
                spent = server_cpu() - cpu if server_cpu else None
                with counter._lock:
                    counter.counts[endpoint] += 1
                    counter.seconds[endpoint] += elapsed
                    if spent is not None:
                        counter.cpu[endpoint] += spent

        requests.Session.request = counting  # type: ignore[method-assign]
        try:
            yield self
        finally:
            requests.Session.request = original  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return sum(self.counts.values())
