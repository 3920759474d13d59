"""Fault campaign: relogs and promotions killed, the MLflow server stopped, S3 cut, and what is left.

Not a test and not in CI's pass/fail: it prints, per scenario, how many trials kept every
invariant and the first violations, with what was drawn, so that a violation can be replayed.

Scenarios (`--n` trials each, the draws of trial `i` from `random.Random(f"{seed}:{scenario}:{i}")`):

* **relog**: a relog (`tracking.relog.relog_one` with the save_dir's Prefect lock, as `relog` and
  diag flows run it) SIGKILLed at a point drawn from: `create` (before or while the MLflow run is
  created), `params` (before or while the params are logged), `body` (before or while the body
  logs a metric), `ended` (the run ended FINISHED, not yet tagged active), `promote` (while or
  just after the new run is tagged active, before the previous one is deprecated) and `settle`
  (an unserialised relog, whose settle step runs only without a lock, killed before or during
  its search of the chain). "while" kills after a random delay of 0-50 ms once the call has started, so the request
  may or may not have reached the server. After the kill: at most one active run, the previous
  good run still active (unless the relog had promoted its run), the killed run not active;
  after `flexlock_prefect.reconcile([save_dir])`: exactly one active run, one chain, no RUNNING
  run, the previous good run active when the relog died before its commit point (tagging its
  run active: every point but `promote` and `settle`), and a second reconcile changes nothing.
* **promote**: `registry.move` (with the model's Prefect lock, as the promote flow calls it)
  SIGKILLed before or during its k-th registry write (k drawn over the writes of the move), for a
  move drawn from new→dev, dev→staging, staging→prod (archiving the prod holder) and
  staging→archived. Then: do aliases and lifecycle tags agree right after the kill, after the
  same move is retried (what a user does next), and after a further move of that version to
  archived? `reconcile` repairs supersession chains only (tracking/relog.py): it is run once at
  the end over every logical run and the registry is checked again.
* **server**: rounds of up to `--round-size` relogs and moves, each held at a drawn point (the
  relog points, `start` before a relog's first request, a move's k-th write or its start) while
  the MLflow server is stopped (SIGTERM), then let go: each must fail with a FlexlockError within
  `--hang-after` seconds. The server is restarted on the same port, SQLite database and artifact
  directory; then reconcile (relogs) and the next moves (promotions) are checked as above. Half
  the trials run with nothing set, so flexlock's `FLEXLOCK_TRACKING_RETRIES` bounds MLflow's
  retries; half with a user's `MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`.
* **s3**: `capture_run` + `RunLock.save` or a `locked_flow` run, data and save_dir on S3, with S3
  cut (every connection reset, new ones refused) either at a random moment of the run or after a
  random number of bytes of a run.lock PUT, for 0.1-2 s or 5-15 s. Then run.lock must load
  (`RunLock`), and be byte for byte the old record or one the run wrote in full; a run that
  completed must have left its new record. moto keeps its objects only in memory, so "S3 down"
  is a TCP relay in front of it that the campaign cuts: the client sees what a stopped server
  shows, and the bucket survives to be checked.

Everything is real and on loopback: `prefect server start`, `mlflow server` (SQLite, one worker),
moto in server mode. Relogs and moves run in child processes forked from a pre-imported
multiprocessing forkserver, so a trial costs no interpreter start; a hook installed in the child
reports each point on a pipe and waits for the parent's word, and the parent SIGKILLs it. Lease
`FLEXLOCK_LOCK_LEASE_S=5` (the minimum), so a killed holder's lock is freed by the next waiter
after about 5 s; trials run in `--lanes` parallel lanes, each on its own save_dir or model, so
those waits overlap.

Run from the repository root (`--n 100`: 15-20 minutes on 2 cores; `--n 10`: 3 minutes):

    python benchmarks/faults.py --n 100 [--seed S] [--only relog,promote,server,s3]

Exit status 0 whatever the invariants; 1 only when the harness itself broke.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from contextvars import copy_context
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import WORK_ROOT, machine_line, median, prepare_environment

WORK = WORK_ROOT / "faults"
SCENARIOS = ("relog", "promote", "server", "s3")
RELOG_POINTS = ("create", "params", "body", "ended", "promote", "settle")
POINT_MODES = {"create": ("before", "during"), "params": ("before", "during"), "body": ("before", "during")}
POINT_MODES |= {"ended": ("before",), "promote": ("during",), "settle": ("before", "during")}
SERVER_RELOG_POINTS = ("start", *RELOG_POINTS)  # start: before the relog's first request (its health check)
MOVES = {"new→dev": ([], "dev"), "dev→staging": (["dev"], "staging")}
MOVES |= {"staging→prod": (["dev", "staging"], "prod"), "staging→archived": (["dev", "staging"], "archived")}
KILL_DELAY_S = 0.05  # "during": SIGKILL within this long after the call started
SETTLE_AFTER_KILL_S = 0.3  # let the server finish a request the killed child had sent
POINT_TIMEOUT_S = 90  # a child that reaches no point by then is a harness failure
S3_BUCKET = "faults"
S3_DATA_FILES, S3_DATA_FILE_BYTES = 16, 256 * 1024
S3_HANG_AFTER_S = 120
PRELOAD = [
    "mlflow",
    "prefect",
    "s3fs",
    "flexlock_prefect.tracking.relog",
    "flexlock_prefect.tracking.registry",
    "flexlock_prefect.concurrency",
    "flexlock_prefect.main",
    "flexlock_prefect.capture",
]
OFFLINE_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_ACCESS_KEY_ID": "faults",
    "AWS_SECRET_ACCESS_KEY": "faults",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def first_line(text: str, limit: int = 240) -> str:
    line = next((part for part in str(text).strip().splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# =========================================================================== bookkeeping


@dataclass(frozen=True)
class Check:
    """One invariant of one trial: `ok`, `known` (a window the README documents) or `violated`."""

    name: str
    outcome: str
    detail: str = ""


@dataclass
class Trial:
    scenario: str
    index: int
    case: str  # the row of the table
    draw: str  # what was drawn: enough to replay it
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # tallied in the notes under the table
    measures: dict[str, float] = field(default_factory=dict)  # median and max in the notes

    def check(self, name: str, ok: bool, detail: str = "", known: bool = False) -> bool:
        self.checks.append(Check(name, "ok" if ok else "known" if known else "violated", "" if ok else detail))
        return ok

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if c.outcome == "violated"]


@dataclass
class Report:
    scenario: str
    title: str
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)

    def table(self, cases: Sequence[str]) -> str:
        lines = [f"### {self.scenario}: {self.title}", ""]
        lines += ["| case | trials | invariants held | violations | documented window | s / trial |"]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        ordered = [c for c in cases if any(t.case == c for t in self.trials)]
        ordered += sorted({t.case for t in self.trials} - set(ordered))
        for case in [*ordered, None]:
            rows = [t for t in self.trials if case is None or t.case == case]
            held = sum(not t.violations for t in rows)
            violations = sum(len(t.violations) for t in rows)
            known = sum(any(c.outcome == "known" for c in t.checks) for t in rows)
            label = f"**all ({self.seconds:.0f} s)**" if case is None else case
            mean = sum(t.seconds for t in rows) / len(rows) if rows else 0.0
            lines.append(f"| {label} | {len(rows)} | {held} | {violations} | {known} | {mean:.1f} |")
        details = [(t, c) for t in self.trials for c in t.violations]
        if details:
            lines += ["", "Violations, by invariant:"]
            lines += [f"- {n}× {name}" for name, n in Counter(c.name for _, c in details).most_common()]
            lines += ["", "The first 8:"]
            for trial, check in details[:8]:
                lines.append(f"- #{trial.index} {trial.case} [{trial.draw}]: **{check.name}**: {check.detail}")
        windows = Counter(f"{c.name}: {c.detail}" for t in self.trials for c in t.checks if c.outcome == "known")
        if windows:
            lines += ["", "Documented windows:"] + [f"- {n}× {text}" for text, n in windows.most_common(3)]
        facts: dict[str, Counter[str]] = {}
        for trial in self.trials:
            for name, value in trial.facts.items():
                facts.setdefault(name, Counter())[value] += 1
        measures: dict[str, list[float]] = {}
        for trial in self.trials:
            for name, value in trial.measures.items():
                measures.setdefault(name, []).append(value)
        if facts or measures or self.notes:
            lines += ["", "Notes:"]
            for name, counts in facts.items():
                lines.append(f"- {name}: " + ", ".join(f"{v} ({n})" for v, n in counts.most_common(6)))
            for name, values in measures.items():
                lines.append(f"- {name}: median {median(values):.1f} s, max {max(values):.1f} s")
            lines += [f"- {note}" for note in self.notes]
        if self.harness_errors:
            lines += ["", f"HARNESS ERRORS ({len(self.harness_errors)}):"] + [f"- {e}" for e in self.harness_errors[:5]]
        return "\n".join(lines)


class LeaseLog(logging.Handler):
    """Counts the lock warnings of this process: a waiter freeing a dead holder's lease, and waits
    longer than a lease (for a holder that left no record, such a waiter cannot free it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.freed = 0
        self.long_waits: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "freeing the lease" in message:
            self.freed += 1
        elif ": waiting for " in message:
            self.long_waits["a holder with no record" if "no record" in message else "a holder with a record"] += 1


# =========================================================================== S3 cut: a relay in front of moto


class Relay:
    """A loopback TCP relay to an upstream server that can be cut like a stopped server.

    `cut()` resets every open connection and closes the listening socket (new connections are
    refused); `restore()` listens again on the same port. `arm(budget)` cuts once `budget` more
    bytes went from clients to the server: a request can be cut in its headers or its body.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._budget: int | None = None
        self.cut_at: float | None = None
        self.cuts = 0
        self.restore()

    def restore(self) -> None:
        with self._lock:
            self._budget = None
            self.cut_at = None
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            listener.settimeout(0.2)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def arm(self, budget: int) -> None:
        with self._lock:
            self._budget = budget

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self._budget = None
            if listener is not None:
                self.cut_at = time.monotonic()
                self.cuts += 1
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                sock.close()
            except OSError:
                pass

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upward: bool) -> None:
        try:
            while data := source.recv(65536):
                cut_after = False
                if upward:
                    with self._lock:
                        if self._budget is not None:
                            data = data[: self._budget]
                            self._budget -= len(data)
                            cut_after = self._budget == 0
                if data:
                    target.sendall(data)
                if cut_after:
                    self.cut()
                    return
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# =========================================================================== servers


class MlflowServer:
    """`mlflow server` (SQLite, one worker, local artifacts) that can be stopped and started again
    on the same port, database and artifact directory, like a restarted team server."""

    def __init__(self, home: Path) -> None:
        from flexlock_prefect.local import free_port

        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.starts = 0
        self.process: Any = None
        (home / "artifacts").mkdir(parents=True, exist_ok=True)

    def start(self) -> float:
        from flexlock_prefect.local import ServerProcess

        started = time.monotonic()
        self.starts += 1
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = ServerProcess(
            [*command, "--workers", "1"],
            health_url=f"{self.url}/health",
            log_path=self.home / f"mlflow-{self.starts}.log",
            env={
                "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{self.home}/mlflow.db",
                "MLFLOW_ARTIFACTS_DESTINATION": str(self.home / "artifacts"),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
            timeout_s=120,
        )
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


# =========================================================================== children (run in forked processes)


class Gate:
    """The child's end of the pipe: say where it is, then wait for the parent's word (or SIGKILL)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def at(self, *where: Any) -> Any:
        self.conn.send(("at", *where))
        return self.conn.recv()

    def after(self, *where: Any) -> None:
        self.conn.send(("after", *where))
        time.sleep(3600)  # the parent kills it here


def hook(owner: Any, name: str, gate: Gate, point: str, matches: Callable[..., bool], block_after: bool) -> None:
    """Make the first call of `owner.name` that `matches` stop at the gate (and after the call)."""
    original = getattr(owner, name)
    fired = False

    @functools.wraps(original)
    def hooked(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if fired or not matches(*args, **kwargs):
            return original(*args, **kwargs)
        fired = True
        gate.at(point)
        result = original(*args, **kwargs)
        if block_after:
            gate.after(point)
        return result

    setattr(owner, name, hooked)


def relog_child(gate: Gate, spec: dict[str, Any]) -> str:
    """Relog `spec["save_dir"]` stopping at `spec["point"]`; blocks after it unless the server scenario."""
    from mlflow import MlflowClient

    from flexlock_prefect.concurrency import run_lock
    from flexlock_prefect.tracking import supersede
    from flexlock_prefect.tracking.outputs import logs_through_client
    from flexlock_prefect.tracking.relog import relog_one
    from flexlock_prefect.tracking.tags import ACTIVE, STATUS

    point, block = spec["point"], not spec.get("server_stopped", False)

    def logs_params(*args: Any, **kwargs: Any) -> bool:
        return bool(kwargs.get("params"))

    def tags_active(*args: Any, **kwargs: Any) -> bool:
        return any(tag.key == STATUS and tag.value == ACTIVE for tag in kwargs.get("tags") or [])

    hooks = {
        "create": (MlflowClient, "create_run", lambda *a, **k: True),
        "params": (MlflowClient, "log_batch", logs_params),
        "ended": (supersede, "_promote", lambda *a, **k: True),
        "promote": (MlflowClient, "log_batch", tags_active),
        "settle": (supersede, "runs_of", lambda *a, **k: True),  # only the settle step calls it
    }
    if point in hooks:
        owner, name, matches = hooks[point]
        hook(owner, name, gate, point, matches, block_after=block)

    @logs_through_client
    def body(save_dir: str, run: Any) -> None:
        if point == "body":
            gate.at("body")
            if not block:  # server scenario: the body makes no request of its own after the stop
                return
            MlflowClient().log_metric(run.info.run_id, "faults.body", 1.0)
            gate.after("body")

    serialize = None if point == "settle" else run_lock  # settle runs only when unserialised
    if point == "start":
        gate.at("start")
    _, relog = relog_one(spec["save_dir"], body, force=True, version="faults", serialize=serialize)
    return relog.run_id


def move_child(gate: Gate, spec: dict[str, Any]) -> str:
    """`registry.move` under the model's Prefect lock, stopping at every registry write."""
    from mlflow import MlflowClient

    from flexlock_prefect.concurrency import model_lock
    from flexlock_prefect.tracking import registry

    writes = 0
    for name in ("set_model_version_tag", "set_registered_model_alias", "delete_registered_model_alias"):
        original = getattr(MlflowClient, name)

        def hooked(self: Any, *args: Any, _original: Callable[..., Any] = original, _name: str = name, **kw: Any):
            nonlocal writes
            writes += 1
            gate.at(writes, _name)
            return _original(self, *args, **kw)

        setattr(MlflowClient, name, hooked)
    to = spec["to"]
    approved = to in ("staging", "prod")
    if spec.get("gate_start"):
        gate.at(0, "start")
    registry.move(
        spec["model"], spec["version"], to, "faults", "fault campaign", approved=approved, serialize=model_lock
    )
    return f"{writes} writes"


def s3_child(gate: Gate, spec: dict[str, Any]) -> str:
    """capture_run + save, or a locked_flow run, reporting every run.lock it is about to write."""
    from flexlock_prefect import storage

    original = storage.write_atomic
    writes = 0

    def reported(url: Any, data: bytes) -> None:
        nonlocal writes
        if str(url).endswith("/run.lock"):
            writes += 1
            gate.conn.send(("write", writes, hashlib.sha256(data).hexdigest(), len(data)))
            gate.conn.recv()
        original(url, data)

    storage.write_atomic = reported
    config = {"x": spec["value"], "input_data": f"s3://{S3_BUCKET}/data", "save_dir": spec["save_dir"]}
    gate.conn.send(("start",))
    if spec["kind"] == "capture_run":
        from flexlock_prefect.capture import capture_run

        _, lock = capture_run(config, data=["input_data"])
        lock.save()
        return f"{writes} run.lock writes"
    from flexlock_prefect import locked_flow

    def faults_compute(cfg: Any) -> None:
        storage.write_atomic(storage.join(cfg.save_dir, "out.txt"), b"output\n")

    locked_flow(config=config, data=["input_data"], name="faults-s3", log_prints=False)(faults_compute)()
    return f"{writes} run.lock writes"


CHILDREN: dict[str, Callable[[Gate, dict[str, Any]], str]] = {"relog": relog_child, "move": move_child, "s3": s3_child}


def child_main(conn: Any, spec: dict[str, Any], log_path: str) -> None:
    """Entry point of every forked child: output to the log, environment from `spec`, then the work."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(spec.get("env", {}))
    started = time.monotonic()
    try:
        outcome = CHILDREN[spec["child"]](Gate(conn), spec)
        conn.send(("result", "completed", outcome, False, time.monotonic() - started))
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
        from flexlock_prefect.exceptions import FlexlockError

        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        print(f"child {os.getpid()} {spec.get('child')}: {name}: {exc}", flush=True)
        conn.send(("result", name, first_line(str(exc)), isinstance(exc, FlexlockError), time.monotonic() - started))


class Child:
    """The parent's handle on one forked child: messages, replies, SIGKILL."""

    _start_lock = threading.Lock()

    def __init__(self, ctx: Any, spec: dict[str, Any], log_path: Path) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=child_main, args=(child_conn, spec, str(log_path)), daemon=True)
        with Child._start_lock:
            self.process.start()
        child_conn.close()
        self.result: tuple | None = None

    def recv(self, timeout: float) -> tuple | None:
        """The next message, None on timeout; a result is also kept in `self.result`."""
        try:
            if not self.conn.poll(timeout):
                return None
            message = self.conn.recv()
        except (EOFError, OSError):
            message = ("result", "died", f"exit code {self.process.exitcode}", False, 0.0)
            time.sleep(0.05)
        if message[0] == "result":
            self.result = message
        return message

    def wait_for(self, kind: str, timeout: float = POINT_TIMEOUT_S) -> tuple:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is None:
                break
            if message[0] == kind or message[0] == "result":
                return message
        raise TimeoutError(f"child {self.process.pid} sent no {kind!r} in {timeout:.0f} s")

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def kill_at(self, mode: str, delay: float) -> list[tuple]:
        """SIGKILL where the child is held ("before" the call), or `delay` seconds into it ("during")."""
        if mode == "during":
            self.send("go")
            time.sleep(delay)
        return self.kill()

    def kill(self) -> list[tuple]:
        """SIGKILL; the messages it sent before dying."""
        self.process.kill()
        self.process.join()
        messages = []
        try:
            while self.conn.poll(0):
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        self.conn.close()
        return messages

    def close(self) -> None:
        self.process.join(timeout=30)
        self.conn.close()


# =========================================================================== checks (parent)


def chain_state(client: Any, key: str) -> list[Any]:
    """Every run of one logical run on the whole server, oldest end first (as tests' `chain`)."""
    from flexlock_prefect.tracking.client import all_experiment_ids
    from flexlock_prefect.tracking.supersede import runs_of

    return list(reversed(runs_of(client, all_experiment_ids(client), key)))


def actives(runs: Iterable[Any]) -> list[str]:
    from flexlock_prefect.tracking.tags import ACTIVE, STATUS

    return [r.info.run_id for r in runs if r.data.tags.get(STATUS) == ACTIVE]


def chain_problems(runs: Sequence[Any]) -> list[str]:
    """What keeps the runs of one logical run from being one chain (tests' `assert_one_chain`)."""
    from flexlock_prefect.tracking.tags import ACTIVE, CHAIN_TAGS, DEPRECATED, STATUS, SUPERSEDED_BY, SUPERSEDES

    problems = []
    running = [r.info.run_id[:8] for r in runs if r.info.status == "RUNNING"]
    if running:
        problems.append(f"runs still RUNNING: {running}")
    finished = sorted(
        (r for r in runs if r.info.status == "FINISHED"), key=lambda r: (r.info.end_time or 0, r.info.start_time or 0)
    )
    statuses = [r.data.tags.get(STATUS) for r in finished]
    if statuses != [DEPRECATED] * (len(finished) - 1) + [ACTIVE]:
        problems.append(f"statuses of the finished runs, oldest first: {statuses}")
    for older, newer in zip(finished, finished[1:], strict=False):
        if (
            older.data.tags.get(SUPERSEDED_BY) != newer.info.run_id
            or newer.data.tags.get(SUPERSEDES) != older.info.run_id
        ):
            problems.append(f"link {older.info.run_id[:8]} → {newer.info.run_id[:8]} broken")
    if finished and (SUPERSEDES in finished[0].data.tags or SUPERSEDED_BY in finished[-1].data.tags):
        problems.append("a chain end links beyond the chain")
    tagged = [
        r.info.run_id[:8] for r in runs if r.info.status != "FINISHED" and any(t in r.data.tags for t in CHAIN_TAGS)
    ]
    if tagged:
        problems.append(f"runs outside the chain carry chain tags: {tagged}")
    if len(actives(runs)) != 1:
        problems.append(f"{len(actives(runs))} active runs")
    return problems


def registry_problems(client: Any, model: str) -> list[str]:
    """Where aliases, lifecycle tags and histories of `model` disagree (README, Promotion).

    An alias names the version that entered its state last, while that version is still in
    it; a version that left takes the alias with it. So for each state: the alias is there,
    naming the last version to enter the state, exactly when that version is still in it. At
    most one version is prod, and each version's lifecycle tag is where its history ends.
    """
    from flexlock_prefect.tracking.lifecycle import STATES
    from flexlock_prefect.tracking.tags import HISTORY, LIFECYCLE

    aliases = {a: str(v) for a, v in client.get_registered_model(model).aliases.items() if a in STATES}
    versions = client.search_model_versions(f"name='{model}'")
    state = {str(v.version): v.tags.get(LIFECYCLE) for v in versions}
    history = {str(v.version): json.loads(v.tags.get(HISTORY, "[]")) for v in versions}
    problems = []
    for alias in STATES:
        entries = [(e["at"], v) for v in state for e in history[v] if e["to"] == alias]
        last = max(entries)[1] if entries else None
        expected = last if last is not None and state[last] == alias else None
        actual = aliases.get(alias)
        if actual != expected:
            named = f"names v{actual} (lifecycle {state.get(actual)})" if actual else "is missing"
            wanted = f"v{expected}, the last to enter {alias}" if expected else "no version"
            problems.append(f"alias {alias} {named}; it should name {wanted}")
    if len([v for v in state if state[v] == "prod"]) > 1:
        problems.append(f"several prod versions: {[v for v in state if state[v] == 'prod']}")
    for version in state:
        last_to = history[version][-1]["to"] if history[version] else None
        if last_to != state[version]:
            problems.append(f"v{version}: lifecycle {state[version]} but its history ends with {last_to}")
    return problems


# =========================================================================== the campaign


@dataclass
class Campaign:
    args: argparse.Namespace
    ctx: Any
    mlflow: MlflowServer | None
    lease_log: LeaseLog
    client: Any = None
    model_source: tuple[str, str] = ("", "")
    samples: dict[tuple[str, str], str] = field(default_factory=dict)  # an error message of each kind

    def rng(self, scenario: str, index: int) -> random.Random:
        return random.Random(f"{self.args.seed}:{scenario}:{index}")

    def child(self, spec: dict[str, Any], scenario: str) -> Child:
        return Child(self.ctx, spec, WORK / f"children-{scenario}.log")

    def lanes(self, report: Report, count: int, lanes: int, run: Callable[[int, int], Trial]) -> None:
        """Trials 0..count-1, trial i in lane i % lanes, each lane in order in a thread of its own."""
        lock = threading.Lock()

        def lane(number: int) -> None:
            for index in range(number, count, lanes):
                started = time.monotonic()
                try:
                    trial = run(index, number)
                except Exception as exc:  # noqa: BLE001 - a broken trial is reported, the others go on
                    with lock:
                        report.harness_errors.append(f"#{index}: {type(exc).__name__}: {exc}")
                    log(f"{report.scenario} #{index}: harness error\n{traceback.format_exc()}")
                    continue
                trial.seconds = time.monotonic() - started
                with lock:
                    report.trials.append(trial)
                    done = len(report.trials)
                if trial.violations:
                    log(f"{report.scenario} #{index} {trial.case}: {'; '.join(c.name for c in trial.violations)}")
                if done % 10 == 0:
                    log(f"{report.scenario}: {done}/{count} trials")

        with ThreadPoolExecutor(lanes) as pool:
            for future in [pool.submit(copy_context().run, lane, number) for number in range(min(lanes, count))]:
                future.result()
        report.trials.sort(key=lambda t: t.index)

    # ----------------------------------------------------------------------- relog

    def make_save_dirs(self, names: Sequence[str]) -> list[str]:
        """One finished run directory per name, relogged once: each has its good active run."""
        from flexlock_prefect import relog
        from flexlock_prefect.capture import capture_run

        save_dirs = []
        for name in names:
            _, lock = capture_run({"project": "faults", "lane": name, "lr": 0.1, "save_dir": str(WORK / "runs" / name)})
            lock.save()
            save_dirs.append(lock.logical_run_id)
        outcomes = relog(save_dirs, force=True)
        assert all(o.outcome == "relogged" for o in outcomes), outcomes
        return save_dirs

    def draw_relog(self, rng: random.Random) -> tuple[str, str, float]:
        point = rng.choice(RELOG_POINTS)
        mode = rng.choice(POINT_MODES[point])
        return point, mode, rng.uniform(0, KILL_DELAY_S) if mode == "during" else 0.0

    def relog_before(self, trial: Trial, key: str) -> tuple[set[str], str]:
        runs = chain_state(self.client, key)
        active = actives(runs)
        trial.check("one active run before the trial", len(active) == 1, f"{len(active)} active: {active}")
        return {r.info.run_id for r in runs}, active[0] if active else ""

    def relog_after_fault(self, trial: Trial, key: str, point: str, before: set[str], previous: str) -> None:
        runs = chain_state(self.client, key)
        active = actives(runs)
        new = [r.info.run_id for r in runs if r.info.run_id not in before]
        two_known = point == "promote" and len(active) == 2 and previous in active
        detail = "the new run tagged active, the previous not yet deprecated" if two_known else f"{active}"
        trial.check("at most one active run", len(active) <= 1, f"{len(active)} active runs: {detail}", known=two_known)
        if point == "settle":
            trial.check("the relog's promoted run is active", bool(set(new) & set(active)), f"active: {active}")
        else:
            trial.check("previous good run still active", previous in active, f"active: {active}, previous {previous}")
        if point not in ("promote", "settle"):  # at these points the relog has (or may have) tagged its run
            trial.check("the killed run is not active", not set(new) & set(active), f"new runs {new} active")
        trial.facts["runs the relog left"] = (
            ", ".join(sorted(r.info.status for r in runs if r.info.run_id in new)) or "none"
        )

    def reconcile_and_check(self, trial: Trial, save_dir: str, key: str, previous: str, point: str) -> None:
        from flexlock_prefect import reconcile

        started = time.monotonic()
        try:
            [outcome] = reconcile([save_dir])
        except Exception as exc:  # noqa: BLE001 - a reconcile that fails is a violation, not a harness error
            trial.check("reconcile succeeds", False, f"{type(exc).__name__}: {first_line(str(exc))}")
            return
        if outcome.outcome == "failed":
            trial.check("reconcile succeeds", False, outcome.reason or "")
            return
        repairs = outcome.repairs
        trial.measures["reconcile, with the wait for a killed holder's lock"] = waited = time.monotonic() - started
        if waited > 3 * self.args.lease:
            trial.facts["reconcile slower than 3 leases"] = f"#{trial.index} ({point}): {waited:.0f} s"
        runs = chain_state(self.client, key)
        problems = chain_problems(runs)
        trial.check("one active run and one chain after reconcile", not problems, "; ".join(problems))
        active = actives(runs)
        if active:
            trial.facts["active after reconcile"] = (
                "previous good run" if active[0] == previous else f"the faulted relog's run ({point})"
            )
        if point not in ("promote", "settle"):  # killed before its commit point: invariant 2
            trial.check("previous good run still active after reconcile", active == [previous], f"active: {active}")
        trial.facts["reconcile repairs"] = str(len(repairs))
        again = [repair for outcome in reconcile([save_dir]) for repair in outcome.repairs]
        trial.check("a second reconcile changes nothing", not again, f"{[(r.run_id[:8], r.change) for r in again]}")

    def run_relog(self, report: Report) -> None:
        from flexlock_prefect.lock import logical_run_key

        lanes = min(self.args.lanes, self.args.n)
        save_dirs = self.make_save_dirs([f"relog-lane-{j}" for j in range(lanes)])

        def trial(index: int, lane: int) -> Trial:
            rng = self.rng("relog", index)
            point, mode, delay = self.draw_relog(rng)
            save_dir, key = save_dirs[lane], logical_run_key(save_dirs[lane])
            trial = Trial("relog", index, point, f"{mode}{f' +{delay * 1000:.0f} ms' if delay else ''}")
            before, previous = self.relog_before(trial, key)
            child = self.child({"child": "relog", "save_dir": save_dir, "point": point}, "relog")
            message = child.wait_for("at")
            if message[0] == "result":
                child.close()
                raise RuntimeError(f"the relog ended before reaching {point}: {message}")
            after_call = any(m[0] == "after" for m in child.kill_at(mode, delay))
            trial.facts["killed"] = f"{mode} the call" if not after_call else "after the call"
            time.sleep(SETTLE_AFTER_KILL_S)
            self.relog_after_fault(trial, key, point, before, previous)
            self.reconcile_and_check(trial, save_dir, key, previous, point)
            return trial

        self.lanes(report, self.args.n, lanes, trial)

    # ----------------------------------------------------------------------- promote

    def new_version(self, model: str) -> str:
        from mlflow.exceptions import MlflowException

        with suppress(MlflowException):
            self.client.create_registered_model(model)
        run_id, source = self.model_source
        return str(self.client.create_model_version(model, source, run_id=run_id).version)

    def parent_move(self, model: str, version: str, to: str) -> str:
        """A move as the promote flow makes it (under the model's lock); what happened, in words."""
        from flexlock_prefect.concurrency import model_lock
        from flexlock_prefect.exceptions import FlexlockError
        from flexlock_prefect.tracking import registry

        try:
            registry.move(model, version, to, "faults", "", approved=to in ("staging", "prod"), serialize=model_lock)
            return "moved"
        except FlexlockError as exc:
            return f"refused: {first_line(str(exc), 160)}"

    def prepare_move(self, model: str, kind: str, with_prod_holder: bool) -> tuple[str, str, int]:
        """A fresh model whose new version is where a move of `kind` starts (for staging→prod,
        maybe with another version in prod); the move's target and how many writes it makes."""
        setup, to = MOVES[kind]
        steps: list[tuple[str, str]] = []
        if to == "prod" and with_prod_holder:
            holder = self.new_version(model)
            steps += [(holder, state) for state in ("dev", "staging", "prod")]
        version = self.new_version(model)
        steps += [(version, state) for state in setup]
        for moved, state in steps:
            outcome = self.parent_move(model, moved, state)
            if outcome != "moved":
                raise RuntimeError(f"setting {model} v{moved} up for {kind}: {outcome}")
        approved = 2 if to in ("staging", "prod") else 0
        writes = 3 + approved + (1 if setup else 0)  # two tags (+2 approval), the alias, the old alias removed
        if to == "prod" and with_prod_holder:
            writes += 4  # the prod holder archived first: two tags, alias archived, alias prod removed
        return version, to, writes

    def after_next_moves(self, trial: Trial, model: str, version: str, to: str, before: list[str]) -> None:
        """Agreement after the kill, after the same move again, after a move to archived."""
        from flexlock_prefect.tracking.tags import LIFECYCLE

        problems = registry_problems(self.client, model)
        trial.facts["agree right after the fault"] = "yes" if not problems else "no"
        trial.facts["lifecycle tag after the fault"] = (
            f"{self.client.get_model_version(model, version).tags.get(LIFECYCLE)}"
        )
        retry = self.parent_move(model, version, to)
        trial.facts["the same move again"] = "moved" if retry == "moved" else "refused"
        problems = [p for p in registry_problems(self.client, model) if p not in before]
        trial.check(
            "aliases and tags agree after the move is retried", not problems, "; ".join(problems) + f" ({retry})"
        )
        if self.client.get_model_version(model, version).tags.get(LIFECYCLE) != "archived":
            self.parent_move(model, version, "archived")
        problems = [p for p in registry_problems(self.client, model) if p not in before]
        trial.check("aliases and tags agree after a further move to archived", not problems, "; ".join(problems))

    def run_promote(self, report: Report) -> None:
        lanes = min(self.args.lanes, self.args.n)
        models: list[str] = []

        def trial(index: int, lane: int) -> Trial:
            rng = self.rng("promote", index)
            kind, holder = rng.choice(list(MOVES)), rng.random() < 0.5
            model = f"faults-promote-{index:03d}"
            models.append(model)
            version, to, writes = self.prepare_move(model, kind, holder)
            target, mode = rng.randint(1, writes), rng.choice(("before", "during"))
            delay = rng.uniform(0, KILL_DELAY_S) if mode == "during" else 0.0
            case = f"{kind}{' (prod holder archived)' if kind == 'staging→prod' and holder else ''}"
            trial = Trial(
                "promote", index, case, f"write {target}/{writes} {mode}{f' +{delay * 1000:.0f} ms' if delay else ''}"
            )
            before = registry_problems(self.client, model)
            trial.check("aliases and tags agree before the move", not before, "; ".join(before))
            child = self.child({"child": "move", "model": model, "version": version, "to": to}, "promote")
            while (message := child.wait_for("at"))[0] == "at" and message[1] < target:
                child.send("go")
            if message[0] == "result":
                child.close()
                raise RuntimeError(f"the move made fewer than {target} writes: {message}")
            killed_after = any(m[0] == "at" for m in child.kill_at(mode, delay))
            trial.facts["killed"] = f"{mode} write {message[2]}" if not killed_after else f"after write {message[2]}"
            time.sleep(SETTLE_AFTER_KILL_S)
            self.after_next_moves(trial, model, version, to, before)
            return trial

        run_id = self.client.create_run(self.client.create_experiment("faults-models")).info.run_id
        self.model_source = (run_id, f"runs:/{run_id}/model")
        self.lanes(report, self.args.n, lanes, trial)
        self.registry_after_reconcile(report, models)

    def registry_after_reconcile(self, report: Report, models: Sequence[str]) -> None:
        from flexlock_prefect import reconcile

        broken = [m for m in models if registry_problems(self.client, m)]
        repairs = [repair for outcome in reconcile() for repair in outcome.repairs]
        still = [m for m in models if registry_problems(self.client, m)]
        report.notes.append(
            f"models whose aliases and tags disagree at the end: {len(broken)} of {len(models)}; after "
            f"`reconcile()` over every logical run ({len(repairs)} repairs): {len(still)} (it repairs run chains only)"
        )

    # ----------------------------------------------------------------------- server

    def run_server(self, report: Report) -> None:
        assert self.mlflow is not None
        size = max(2, min(self.args.round_size, self.args.n))
        half = self.args.n // 2
        counts = (half, self.args.n - half)
        variants = [(name, env, count) for (name, env), count in zip(SERVER_VARIANTS, counts, strict=True)]
        relog_slots = (size + 1) // 2
        save_dirs = self.make_save_dirs([f"server-slot-{j}" for j in range(relog_slots)])
        if not self.model_source[0]:
            run_id = self.client.create_run(self.client.create_experiment("faults-models")).info.run_id
            self.model_source = (run_id, f"runs:/{run_id}/model")
        index = 0
        restarts = []
        for variant, env, count in variants:
            for start in range(0, count, size):
                slots = list(range(min(size, count - start)))
                try:
                    restarts.append(self.server_round(report, variant, env, index, slots, save_dirs))
                except Exception as exc:  # noqa: BLE001 - the next rounds still run
                    report.harness_errors.append(f"round #{index}: {type(exc).__name__}: {exc}")
                    log(traceback.format_exc())
                    if self.mlflow.process is None:
                        self.mlflow.start()
                index += len(slots)
        for (variant, name), message in sorted(self.samples.items()):
            report.notes.append(f'{variant}: {name}, e.g. "{first_line(message, 220)}"')
        report.notes.append(
            f"MLflow server restarted {len(restarts)} times, ready again in {median(restarts):.1f} s (median)"
        )

    def server_round(
        self, report: Report, variant: str, env: dict[str, str], first: int, slots: list[int], save_dirs: list[str]
    ) -> float:
        from flexlock_prefect.lock import logical_run_key

        relogs = (len(slots) + 1) // 2

        def prepare(slot: int) -> dict[str, Any]:
            index = first + slot
            rng = self.rng("server", index)
            if slot < relogs:
                point = rng.choice(SERVER_RELOG_POINTS)
                save_dir = save_dirs[slot]
                trial = Trial("server", index, f"{variant}: relog", f"server stopped at {point}")
                before, previous = self.relog_before(trial, logical_run_key(save_dir))
                spec = {"child": "relog", "save_dir": save_dir, "point": point, "server_stopped": True, "env": env}
                return {"trial": trial, "spec": spec, "before": before, "previous": previous, "point": point}
            model = f"faults-server-{index:03d}"
            kind = rng.choice(list(MOVES))
            version, to, writes = self.prepare_move(model, kind, rng.random() < 0.5)
            target = rng.randint(0, writes)
            where = f"write {target}/{writes}" if target else "the move's first request"
            trial = Trial("server", index, f"{variant}: move", f"{kind}, server stopped at {where}")
            spec = {"child": "move", "model": model, "version": version, "to": to, "env": env, "gate_start": not target}
            plan = {"trial": trial, "spec": spec, "target": target, "model": model, "version": version, "to": to}
            return plan | {"before": registry_problems(self.client, model)}

        with ThreadPoolExecutor(min(8, len(slots))) as pool:
            plans = [f.result() for f in [pool.submit(copy_context().run, prepare, slot) for slot in slots]]
        for plan in plans:
            plan["child"] = self.child(plan["spec"], "server")
            plan["started"] = time.monotonic()
        for plan in plans:
            child = plan["child"]
            while (
                (message := child.wait_for("at"))[0] == "at"
                and plan["spec"]["child"] == "move"
                and message[1] < plan["target"]
            ):
                child.send("go")
            if message[0] == "result":  # reported, and left out of the round
                report.harness_errors.append(f"#{plan['trial'].index} ended before its point: {message}")
        for plan in [plan for plan in plans if plan["child"].result is not None]:
            plan["child"].close()
            plans.remove(plan)
        log(f"server round #{first}-{first + len(slots) - 1} ({variant}): {len(plans)} children held; stopping MLflow")
        self.mlflow.stop()
        stopped = time.monotonic()
        for plan in plans:
            plan["child"].send("go")
        deadline = stopped + self.args.hang_after
        pending = list(plans)
        while pending and time.monotonic() < deadline:
            for plan in list(pending):
                message = plan["child"].recv(0.05)
                if message is not None and message[0] == "at":
                    plan["child"].send("go")
                if plan["child"].result is not None:
                    plan["failed_after"] = time.monotonic() - stopped
                    pending.remove(plan)
        for plan in pending:
            plan["child"].kill()
        for plan in plans:
            if plan not in pending:
                plan["child"].close()
        restart = self.mlflow.start()
        log(f"MLflow restarted in {restart:.1f} s; checking the round")

        def check(plan: dict[str, Any]) -> Trial:
            trial, result = plan["trial"], plan["child"].result
            if result is None:
                trial.check(
                    f"fails with a FlexlockError within {self.args.hang_after:g} s", False, "no error yet: killed"
                )
                trial.facts["error"] = f"none within {self.args.hang_after:g} s"
            else:
                _, name, message, is_flexlock, _ = result
                trial.check(
                    f"fails with a FlexlockError within {self.args.hang_after:g} s", is_flexlock, f"{name}: {message}"
                )
                if is_flexlock:  # clear: it says the tracking server is the problem, not something else
                    says = self.mlflow.url in message or "tracking server" in message
                    trial.check("the error names the lost tracking server", says, f"{name}: {message}")
                trial.facts["error"] = f"{name.rsplit('.', 1)[-1]} after {plan['failed_after']:.0f} s"
                short = name.rsplit(".", 1)[-1]
                self.samples.setdefault((variant, short), message.replace(self.mlflow.url, "<URI>"))
            if plan["spec"]["child"] == "relog":
                key = logical_run_key(plan["spec"]["save_dir"])
                self.relog_after_fault(trial, key, plan["point"], plan["before"], plan["previous"])
                self.reconcile_and_check(trial, plan["spec"]["save_dir"], key, plan["previous"], plan["point"])
            else:
                self.after_next_moves(trial, plan["model"], plan["version"], plan["to"], plan["before"])
            trial.seconds = time.monotonic() - plan["started"]
            return trial

        with ThreadPoolExecutor(len(plans)) as pool:
            report.trials += [f.result() for f in [pool.submit(copy_context().run, check, plan) for plan in plans]]
        report.trials.sort(key=lambda t: t.index)
        return restart

    # ----------------------------------------------------------------------- s3

    def run_s3(self, report: Report, moto_port: int) -> None:
        from flexlock_prefect import storage

        fs, _ = storage.filesystem(f"s3://{S3_BUCKET}")
        fs.mkdir(S3_BUCKET)
        data = random.Random(self.args.seed)
        for number in range(S3_DATA_FILES):
            storage.write_atomic(f"s3://{S3_BUCKET}/data/part-{number:02d}.bin", data.randbytes(S3_DATA_FILE_BYTES))
        lanes = min(self.args.lanes, self.args.n, 4)
        relays = [Relay(moto_port) for _ in range(lanes)]
        calibration = {kind: self.s3_calibrate(kind, relays[0]) for kind in ("capture_run", "locked_flow")}
        report.notes.append(
            "a run without fault takes "
            + ", ".join(f"{k} {v:.1f} s" for k, v in calibration.items())
            + " (timed cuts are drawn within it)"
        )

        def trial(index: int, lane: int) -> Trial:
            rng = self.rng("s3", index)
            kind = rng.choice(("capture_run", "locked_flow"))
            mode = rng.choice(("timed", "write"))
            outage = rng.uniform(0.1, 2.0) if rng.random() < 0.6 else rng.uniform(5, 15)
            at = rng.uniform(0, calibration[kind])
            write = rng.choice((1, 2)) if kind == "locked_flow" else 1
            fraction = rng.random()
            what = f"cut at {at:.2f} s" if mode == "timed" else f"cut in run.lock write {write} at {fraction:.0%} of it"
            trial = Trial(
                "s3",
                index,
                f"{kind}, {'timed cut' if mode == 'timed' else 'cut in a run.lock PUT'}",
                f"{what}, {outage:.1f} s down",
            )
            return self.s3_trial(trial, relays[lane], kind, mode, at, write, fraction, outage)

        self.lanes(report, self.args.n, lanes, trial)
        for relay in relays:
            relay.cut()

    def s3_calibrate(self, kind: str, relay: Relay) -> float:
        trial = Trial("s3", -1, kind, "calibration")
        self.s3_trial(trial, relay, kind, "none", 0, 0, 0, 0)
        if trial.violations or not trial.facts.get("outcome", "").endswith(" completed"):
            raise RuntimeError(f"a {kind} run without fault failed: {trial.violations} {trial.facts}")
        return float(trial.facts["run seconds"])

    def s3_trial(
        self, trial: Trial, relay: Relay, kind: str, mode: str, at: float, write: int, fraction: float, outage: float
    ) -> Trial:
        from flexlock_prefect.capture import capture_run
        from flexlock_prefect.lock import RunLock
        from flexlock_prefect.storage import read_bytes

        save_dir = (
            f"s3://{S3_BUCKET}/runs/{kind}-{trial.index:03d}"
            if trial.index >= 0
            else f"s3://{S3_BUCKET}/runs/{kind}-calibration"
        )
        _, old = capture_run({"x": "old", "input_data": "none", "save_dir": save_dir})
        old.save()
        old_sha = hashlib.sha256(read_bytes(f"{save_dir}/run.lock")).hexdigest()
        relay.restore()
        env = {"AWS_ENDPOINT_URL": relay.url, "FLEXLOCK_STAT_CACHE": "false"}
        spec = {"child": "s3", "kind": kind, "save_dir": save_dir, "value": f"new-{trial.index}", "env": env}
        started = time.monotonic()
        child = self.child(spec, "s3")
        written: list[str] = []
        begun = cut_planned = None
        cuts = relay.cuts
        while child.result is None and time.monotonic() - started < S3_HANG_AFTER_S:
            message = child.recv(0.02)
            now = time.monotonic()
            if message and message[0] == "start":
                begun = now
                cut_planned = begun + at if mode == "timed" else None
            elif message and message[0] == "write":
                _, number, sha, length = message
                written.append(sha)
                if mode == "write" and number == write:
                    relay.arm(int(fraction * (length + 900)))  # ~900 bytes of request line and headers
                child.send("go")
            if cut_planned is not None and now >= cut_planned:
                relay.cut()
                cut_planned = None
            if relay.cut_at is not None and now >= relay.cut_at + outage:
                relay.restore()
        if child.result is None:
            child.kill()
            trial.check(f"the run ends within {S3_HANG_AFTER_S} s", False, "killed")
        else:
            child.close()
        trial.seconds = time.monotonic() - started
        relay.restore()
        result = child.result or ("result", "killed", "", False, 0)
        if mode == "none":
            trial.facts["run seconds"] = f"{result[4]:.2f}"
        else:
            trial.facts["S3 cut before the run ended"] = "yes" if relay.cuts > cuts else "no"
        trial.facts["outcome"] = f"{kind} " + ("completed" if result[1] == "completed" else f"raised {result[1]}")
        if result[1] not in ("completed", "killed") and not result[3]:
            where = "writing run.lock" if "/runs/" in result[2] and "run.lock" in result[2] else "reading the data"
            trial.facts["errors that are not a FlexlockError"] = f"{result[1]} while {where}"
        try:
            content = read_bytes(f"{save_dir}/run.lock")
        except Exception as exc:  # noqa: BLE001 - a missing run.lock is a violation
            trial.check("run.lock is the old or a new record", False, f"cannot read it: {exc}")
            return trial
        sha = hashlib.sha256(content).hexdigest()
        which = "old" if sha == old_sha else f"new (write {written.index(sha) + 1})" if sha in written else "neither"
        trial.facts["run.lock left"] = which.split(" ")[0]
        try:
            RunLock.from_text(content, where=save_dir)
            loads = ""
        except Exception as exc:  # noqa: BLE001
            loads = f"{type(exc).__name__}: {first_line(str(exc))}"
        trial.check("run.lock loads", not loads, loads)
        trial.check("run.lock is the old or a new record", which != "neither", f"{len(content)} bytes, sha {sha[:12]}")
        if result[1] == "completed":
            trial.check(
                "a completed run left its last record", bool(written) and sha == written[-1], f"run.lock is {which}"
            )
        return trial


# =========================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="trials per scenario (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every draw (default 1)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"scenarios, comma-separated ({','.join(SCENARIOS)})"
    )
    parser.add_argument("--lanes", type=int, default=6, help="trials run at once, each on its own save_dir/model (6)")
    parser.add_argument("--lease", type=float, default=5.0, help="FLEXLOCK_LOCK_LEASE_S (default 5, the minimum)")
    parser.add_argument(
        "--hang-after", type=float, default=60.0, help="server scenario: seconds before a child counts as hung"
    )
    parser.add_argument(
        "--round-size", type=int, default=20, help="server scenario: operations held per server stop (20)"
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    return args


SERVER_VARIANTS = (
    ("flexlock's retry bound (FLEXLOCK_TRACKING_RETRIES=3)", {}),
    ("the user's MLFLOW_HTTP_REQUEST_MAX_RETRIES=0", {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}),
)
"""How MLflow retries in the server scenario's children: half the trials each."""
TITLES = {
    "relog": "relogs SIGKILLed at a random point, then `reconcile([save_dir])`",
    "promote": "`registry.move` SIGKILLed at a random registry write, then the next moves",
    "server": "the MLflow server stopped mid-relog and mid-promotion, then restarted",
    "s3": "S3 unreachable while a capture or a `locked_flow` reads and writes s3:// data",
}
CASES = {
    "relog": RELOG_POINTS,
    "promote": tuple(MOVES),
    "server": tuple(f"{v}: {k}" for v, _ in SERVER_VARIANTS for k in ("relog", "move")),
    "s3": tuple(f"{k}, {m}" for k in ("capture_run", "locked_flow") for m in ("timed cut", "cut in a run.lock PUT")),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    prepare_environment(
        WORK / "prefect-home",
        FLEXLOCK_LOCK_LEASE_S=f"{args.lease:g}",
        FLEXLOCK_LOCK_TIMEOUT_S="120",
        FLEXLOCK_CACHE_DIR=str(WORK / "flexlock-cache"),
        PREFECT_LOGGING_LEVEL="WARNING",
        # MLflow's telemetry thread would reach for the internet, and when that fails it unsets an
        # environment variable while requests reads os.environ: a KeyError in a relog (seen once).
        MLFLOW_DISABLE_TELEMETRY="true",
        **OFFLINE_AWS,
    )
    lease_log = LeaseLog()
    lock_logger = logging.getLogger("flexlock_prefect.concurrency")
    lock_logger.addHandler(lease_log)
    lock_logger.propagate = False
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" under parallel lanes
    command = f"python benchmarks/faults.py --n {args.n} --seed {args.seed} --only {','.join(args.only)}"
    started = time.monotonic()
    reports: list[Report] = []

    from tests.helpers.servers import prefect_server_for_this_process, start_s3_endpoint

    with ExitStack() as stack:
        stack.enter_context(prefect_server_for_this_process(WORK / "prefect"))
        log(f"Prefect server at {os.environ['PREFECT_API_URL']}")
        mlflow = None
        if set(args.only) & {"relog", "promote", "server"}:
            mlflow = MlflowServer(WORK / "mlflow")
            mlflow.start()
            stack.callback(mlflow.stop)
            os.environ["MLFLOW_TRACKING_URI"] = mlflow.url
            log(f"MLflow server at {mlflow.url}")
        moto_port = 0
        if "s3" in args.only:
            moto, endpoint = start_s3_endpoint(WORK / "moto.log")
            stack.callback(moto.stop)
            os.environ["AWS_ENDPOINT_URL"] = endpoint  # this process reads S3 directly, children through a relay
            moto_port = int(endpoint.rsplit(":", 1)[1])
            log(f"moto S3 at {endpoint}")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *PRELOAD])
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # after import: MLflow sets its level then
        campaign = Campaign(args, ctx, mlflow, lease_log, MlflowClient(mlflow.url) if mlflow else None)
        for scenario in [s for s in SCENARIOS if s in args.only]:
            report = Report(scenario, TITLES[scenario])
            log(f"scenario {scenario}: {args.n} trials")
            begun, freed, waits = time.monotonic(), lease_log.freed, Counter(lease_log.long_waits)
            try:
                if scenario == "s3":
                    campaign.run_s3(report, moto_port)
                else:
                    getattr(campaign, f"run_{scenario}")(report)
            except Exception as exc:  # noqa: BLE001 - the other scenarios still run
                report.harness_errors.append(f"{type(exc).__name__}: {exc}")
                log(traceback.format_exc())
            report.seconds = time.monotonic() - begun
            if lease_log.freed > freed:
                report.notes.append(
                    f"{lease_log.freed - freed} locks of killed holders freed by a waiter here (lease {args.lease:g} s)"
                )
            if long_waits := lease_log.long_waits - waits:
                report.notes.append(
                    "waits for a lock longer than a lease: " + ", ".join(f"{k} ({n})" for k, n in long_waits.items())
                )
            reports.append(report)
            print(report.table(CASES[scenario]) + "\n", flush=True)

    import mlflow as mlflow_module
    import prefect

    total = time.monotonic() - started
    print(f"`{command}`: {total / 60:.1f} minutes in all (servers included)")
    print(
        machine_line(f"prefect {prefect.__version__}", f"mlflow {mlflow_module.__version__}", f"lease {args.lease:g} s")
    )
    broken = sum(len(r.harness_errors) for r in reports)
    if broken:
        print(f"HARNESS BROKE {broken} times: see the errors above and {WORK}/children-*.log")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
