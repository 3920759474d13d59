"""flexlock-prefect: a run.lock for every Prefect run, trustworthy MLflow history, gated promotion.

The public names (DESIGN.md §9) are imported lazily, so that `import flexlock_prefect` and the
CLI's read-only commands do not pay for importing Prefect or MLflow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from flexlock_prefect._version import __version__

_PUBLIC = {
    "locked_flow": "flexlock_prefect.main",
    "diag_flow": "flexlock_prefect.diag",
    "mlflowlink": "flexlock_prefect.diag",
    "relog": "flexlock_prefect.diag",
    "reconcile": "flexlock_prefect.diag",
    "RunLock": "flexlock_prefect.lock",
    "FlexlockError": "flexlock_prefect.exceptions",
    "Pipeline": "flexlock_prefect.pipeline",
    "trace": "flexlock_prefect.tracking.trace",
    "Trace": "flexlock_prefect.tracking.trace",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:
    from flexlock_prefect.diag import diag_flow as diag_flow
    from flexlock_prefect.diag import mlflowlink as mlflowlink
    from flexlock_prefect.diag import reconcile as reconcile
    from flexlock_prefect.diag import relog as relog
    from flexlock_prefect.exceptions import FlexlockError as FlexlockError
    from flexlock_prefect.lock import RunLock as RunLock
    from flexlock_prefect.main import locked_flow as locked_flow
    from flexlock_prefect.pipeline import Pipeline as Pipeline
    from flexlock_prefect.tracking.trace import Trace as Trace
    from flexlock_prefect.tracking.trace import trace as trace


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'flexlock_prefect' has no attribute {name!r}")
