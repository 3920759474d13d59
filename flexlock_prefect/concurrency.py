"""Serialising work on one logical object (a logical run, a registered model) across processes.

When a Prefect API is configured, a Prefect global concurrency limit of one slot, named after the
object, is the lock: every process and worker that talks to the same API waits its turn. Without
an API there is nothing shared to lock on, and the context is a no-op; supersession then relies
on its settle and reconcile steps (see `tracking/supersede.py`).

`run_lock` and `model_lock` are the locks the MLflow side (`flexlock_prefect.tracking`) is given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_API_URL

from flexlock_prefect.settings import get_settings

logger = logging.getLogger(__name__)

_known_limits: set[str] = set()


def prefect_api_configured() -> bool:
    return bool(PREFECT_API_URL.value())


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Hold the one slot of the global concurrency limit `name`; yields whether a lock was taken.

    It waits up to `FLEXLOCK_LOCK_TIMEOUT_S` and holds a lease of `FLEXLOCK_LOCK_LEASE_S`.

    The limit is created on first use: Prefect no longer creates limits on demand, and acquiring
    a missing one would silently lock nothing.

    Example:
        >>> with exclusive("flexlock-run-de961c6972ce12f6"):  # doctest: +SKIP
        ...     relog_one_save_dir()
    """
    if not prefect_api_configured():
        yield False
        return
    _ensure_limit(name)
    settings = get_settings()
    with concurrency(
        name, occupy=1, timeout_seconds=settings.lock_timeout_s, lease_duration=settings.lock_lease_s, strict=True
    ):
        yield True


def _ensure_limit(name: str) -> None:
    if name in _known_limits:
        return
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            logger.debug("created global concurrency limit %s", name)
        except ObjectAlreadyExists:
            pass
    _known_limits.add(name)


def run_lock(logical_run_key: str) -> AbstractContextManager[bool]:
    """The lock of one logical run: relogs and repairs of one save_dir wait for each other."""
    return exclusive(f"flexlock-run-{logical_run_key}")


def model_lock(model: str) -> AbstractContextManager[bool]:
    """The lock of one registered model: its lifecycle moves wait for each other."""
    return exclusive(f"flexlock-model-{model}")
