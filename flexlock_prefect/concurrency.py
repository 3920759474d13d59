"""Serialising work on one logical object (a logical run, a registered model) across processes.

When a Prefect API is configured, a Prefect global concurrency limit of one slot, named after the
object, is the lock: every process and worker that talks to the same API waits its turn. Without
an API there is nothing shared to lock on, and the context is a no-op; supersession then relies
on its settle and reconcile steps (see `tracking/supersede.py`).

Why not `prefect.concurrency.sync.concurrency`: its lease is freed after a holder dies only by
the server's lease service (the repossessor), and `prefect.testing.utilities.prefect_test_harness`
or a server started with its services off never runs it, so a killed holder wedged the lock for
good. Here the holder also keeps a *holder record*, a Prefect Variable named after the lock
(visible under Variables in the UI), and rewrites it on every lease renewal. A waiter that sees
the same record for a whole `FLEXLOCK_LOCK_LEASE_S`, by its own clock, takes the holder for dead
and releases that lease through the API. Releasing a lease is idempotent, so two waiters that
both see the dead holder free it once, and a killed holder delays the others by about one lease
period on any server.

`run_lock` and `model_lock` are the locks the MLflow side (`flexlock_prefect.tracking`) is given.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import copy_context
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, VariableCreate, VariableUpdate
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL

from flexlock_prefect.exceptions import LockTimeout
from flexlock_prefect.prefect_errors import prefect_api_errors
from flexlock_prefect.settings import get_settings

logger = logging.getLogger(__name__)

_known_limits: set[str] = set()

PREFECT_MIN_LEASE_S = 60.0  # the API refuses shorter leases (`increment-with-lease`, `ge=60`)


def prefect_api_configured() -> bool:
    return bool(PREFECT_API_URL.value())


@dataclass(frozen=True)
class HolderRecord:
    """Who holds a lock, kept in a Prefect Variable while it is held; `beat` is its last renewal."""

    lease_id: str
    host: str
    pid: int
    since: str
    beat: str
    flow_run_id: str | None = None

    def describe(self) -> str:
        run = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"pid {self.pid} on {self.host}{run}, since {self.since} (last renewed {self.beat})"


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Hold the one slot of the global concurrency limit `name`; yields whether a lock was taken.

    It waits up to `FLEXLOCK_LOCK_TIMEOUT_S`, then raises `LockTimeout` naming the holder and how
    to free the lock. A wait longer than one lease logs who holds the lock and since when.

    The limit is created on first use: Prefect no longer creates limits on demand, and acquiring
    a missing one would silently lock nothing.

    Example:
        >>> with exclusive("flexlock-run-de961c6972ce12f6"):  # doctest: +SKIP
        ...     relog_one_save_dir()
    """
    if not prefect_api_configured():
        yield False
        return
    with get_client(sync_client=True) as client:
        with prefect_api_errors(f"take the lock {name}"):
            _ensure_limit(client, name)
            lease_id = _acquire(client, name)
            heartbeat = _Heartbeat(name, _record(lease_id))
            try:
                heartbeat.start(client)
            except BaseException:
                client.release_concurrency_slots_with_lease(lease_id)
                raise
        try:
            yield True
        finally:
            heartbeat.stop()
            with prefect_api_errors(f"release the lock {name}"):
                _release(client, name, lease_id)


def _ensure_limit(client: SyncPrefectClient, name: str) -> None:
    if name in _known_limits:
        return
    try:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        logger.debug("created global concurrency limit %s", name)
    except ObjectAlreadyExists:
        pass
    _known_limits.add(name)


def _acquire(client: SyncPrefectClient, name: str) -> UUID:
    """Take the slot, freeing it first if its holder has been silent for a whole lease."""
    settings = get_settings()
    started = time.monotonic()
    deadline = started + settings.lock_timeout_s
    watch = _SilenceWatch()
    reported = False
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=_prefect_lease_s()
            )
            return UUID(response.json()["lease_id"])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != httpx.codes.LOCKED:
                raise
            retry_after = float(exc.response.headers.get("Retry-After", settings.api_poll_s))
        holder = read_holder(client, name)
        now = time.monotonic()
        if holder is not None and watch.silent_for(holder, now) >= settings.lock_lease_s:
            logger.warning("lock %s: freeing the lease of a holder silent for a lease: %s", name, holder.describe())
            client.release_concurrency_slots_with_lease(UUID(holder.lease_id))
            continue
        if not reported and now - started >= settings.lock_lease_s:
            reported = True
            logger.warning("lock %s: waiting for %s", name, holder.describe() if holder else "a holder with no record")
        if now >= deadline:
            raise LockTimeout(_timeout_message(name, holder, settings.lock_timeout_s))
        time.sleep(max(0.0, min(retry_after, settings.api_poll_s, deadline - now)))


class _SilenceWatch:
    """How long the holder record has stayed the same, by this process's monotonic clock.

    The waiter's own clock, not the record's timestamps, decides: clocks of other hosts may be
    off, but a record that does not change is a holder that does not renew."""

    def __init__(self) -> None:
        self._seen: HolderRecord | None = None
        self._since = 0.0

    def silent_for(self, holder: HolderRecord, now: float) -> float:
        if holder != self._seen:
            self._seen, self._since = holder, now
        return now - self._since


def _timeout_message(name: str, holder: HolderRecord | None, waited_s: float) -> str:
    who = f"held by {holder.describe()}" if holder else "held by a holder that left no record"
    return (
        f"lock {name} is still {who} after {waited_s:g} s (FLEXLOCK_LOCK_TIMEOUT_S): wait for that "
        f"holder to finish, or if it is gone free the lock with `prefect gcl update {name} --active-slots 0`"
    )


def _prefect_lease_s() -> float:
    return max(PREFECT_MIN_LEASE_S, get_settings().lock_lease_s)


def _record(lease_id: UUID) -> HolderRecord:
    now = _now()
    run = FlowRunContext.get()
    flow_run_id = str(run.flow_run.id) if run and run.flow_run else None
    return HolderRecord(str(lease_id), socket.gethostname(), os.getpid(), now, now, flow_run_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_name(lock: str) -> str:
    """The Prefect Variable that names the holder of `lock` (lowercase letters, digits, - and _)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", lock.lower())
    return slug if slug == lock else f"{slug[:200]}-{sha256(lock.encode()).hexdigest()[:8]}"


def read_holder(client: SyncPrefectClient, name: str) -> HolderRecord | None:
    """The holder record of lock `name`, or None when there is none (or it is not ours)."""
    variable = client.read_variable_by_name(record_name(name))
    value: Any = variable.value if variable else None
    try:
        return HolderRecord(**value) if isinstance(value, dict) else None
    except TypeError:
        return None


def _write_holder(client: SyncPrefectClient, name: str, holder: HolderRecord) -> None:
    """Update the record, or create it; created meanwhile by another writer (a holder whose lease
    was freed while it still ran), it is updated after all: the last write is the holder's."""
    variable = record_name(name)
    try:
        client.update_variable(VariableUpdate(name=variable, value=asdict(holder)))
        return
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != httpx.codes.NOT_FOUND:
            raise
    try:
        client.create_variable(VariableCreate(name=variable, value=asdict(holder), tags=["flexlock-lock"]))
    except ObjectAlreadyExists:
        client.update_variable(VariableUpdate(name=variable, value=asdict(holder)))


def _release(client: SyncPrefectClient, name: str, lease_id: UUID) -> None:
    """Drop the holder record (if it is still ours), then the lease: the next holder's record is
    written only after it holds the slot, so it is never the one deleted here."""
    holder = read_holder(client, name)
    if holder is not None and holder.lease_id == str(lease_id):
        with suppress(ObjectNotFound):
            client.delete_variable_by_name(record_name(name))
    client.release_concurrency_slots_with_lease(lease_id)


class _Heartbeat:
    """Renews the lease and rewrites the holder record every third of a lease, in a thread.

    The thread runs in a copy of the caller's context, where Prefect keeps the API it talks to."""

    def __init__(self, name: str, holder: HolderRecord) -> None:
        self._name = name
        self._holder = holder
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, client: SyncPrefectClient) -> None:
        _write_holder(client, self._name, self._holder)
        self._thread = threading.Thread(
            target=copy_context().run, args=(self._beat,), name=f"flexlock-lease-{self._name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        interval = get_settings().lock_lease_s / 3
        with get_client(sync_client=True) as client:
            while not self._stopped.wait(interval):
                try:
                    client.renew_concurrency_lease(UUID(self._holder.lease_id), lease_duration=_prefect_lease_s())
                    self._holder = HolderRecord(**{**asdict(self._holder), "beat": _now()})
                    _write_holder(client, self._name, self._holder)
                except httpx.HTTPStatusError as exc:
                    logger.error(
                        "lock %s: lost the lease (HTTP %s): a waiter took this holder for dead; "
                        "raise FLEXLOCK_LOCK_LEASE_S if holders stall for that long",
                        self._name,
                        exc.response.status_code,
                    )
                    return
                except httpx.TransportError as exc:
                    logger.warning("lock %s: could not renew the lease (%s); retrying", self._name, exc)


def run_lock(logical_run_key: str) -> AbstractContextManager[bool]:
    """The lock of one logical run: relogs and repairs of one save_dir wait for each other."""
    return exclusive(f"flexlock-run-{logical_run_key}")


def model_lock(model: str) -> AbstractContextManager[bool]:
    """The lock of one registered model: its lifecycle moves wait for each other."""
    return exclusive(f"flexlock-model-{model}")


def inputs_lock(runs_root: str, fingerprint: str) -> AbstractContextManager[bool]:
    """The lock of one set of inputs under a runs root: `skip_if_identical` checks and computes
    under it, so of identical runs started together exactly one computes."""
    key = sha256(f"{runs_root}\n{fingerprint}".encode()).hexdigest()[:16]
    return exclusive(f"flexlock-inputs-{key}")
