"""A run's `metrics.json`: the numbers it reports, keyed by dotted path.

Shared by the default diag body (which logs them to MLflow) and sweeps (which pick the best
trial by one of them), so both read the same file the same way. Record side: no Prefect, no MLflow.
"""

from __future__ import annotations

import json

from flexlock_prefect import storage
from flexlock_prefect.exceptions import StorageNotFound

METRICS_FILE = "metrics.json"


def read_metrics(save_dir: str) -> dict[str, float]:
    """The numeric leaves of `<save_dir>/metrics.json` (empty when the run wrote none).

    Example:
        >>> read_metrics("runs/a")  # doctest: +SKIP
        {'accuracy': 0.96, 'loss.train': 0.12}
    """
    try:
        text = storage.read_bytes(storage.join(storage.canonical_url(save_dir), METRICS_FILE))
    except StorageNotFound:
        return {}
    return numeric_leaves(json.loads(text))


def numeric_leaves(data: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document, keyed by dotted path; other values are skipped.

    Example:
        >>> numeric_leaves({"acc": 0.9, "loss": {"train": 1}, "note": "ok", "done": True})
        {'acc': 0.9, 'loss.train': 1.0}
    """
    if isinstance(data, dict):
        found: dict[str, float] = {}
        for key, value in data.items():
            found |= numeric_leaves(value, f"{prefix}{key}.")
        return found
    if isinstance(data, bool) or not isinstance(data, int | float):
        return {}
    return {prefix.rstrip("."): float(data)}
