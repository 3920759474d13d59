"""The lock callers pass in: the MLflow side serialises on it but never knows what it is."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

Serializer = Callable[[str], AbstractContextManager[bool]]
"""The lock of one logical object (a logical run by its key, a registered model by its name),
entered around every change of it. It yields whether it really serialises: without it a relog
checks its chain after itself and reconcile spares recent running runs. The Prefect side passes
a Prefect global concurrency limit (`flexlock_prefect.concurrency`)."""


def unserialized(name: str) -> AbstractContextManager[bool]:
    """No lock: what runs without a shared lock service."""
    return nullcontext(False)
