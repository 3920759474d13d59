"""★ `flexlock_prefect.registry` (DESIGN.md §9): the registry lifecycle, kept at this path for users.

It lives in `flexlock_prefect.tracking.registry` (moves) and `flexlock_prefect.tracking.audit`
(does everything agree with the lifecycle history?), with the rest of the MLflow side.
"""

from __future__ import annotations

from flexlock_prefect.tracking.audit import Finding, audit
from flexlock_prefect.tracking.registry import ALLOWED, STATES, Move, alias_holder, check_move, history, move, resolve
from flexlock_prefect.tracking.tags import APPROVED_AT, APPROVED_BY, HISTORY, LIFECYCLE

__all__ = [
    "ALLOWED",
    "APPROVED_AT",
    "APPROVED_BY",
    "HISTORY",
    "LIFECYCLE",
    "STATES",
    "Finding",
    "Move",
    "alias_holder",
    "audit",
    "check_move",
    "history",
    "move",
    "resolve",
]
