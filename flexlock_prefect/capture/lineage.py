"""Upstream runs among the inputs: a data path that is, or lies inside, another run's save_dir."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator, Mapping

from flexlock_prefect import storage
from flexlock_prefect.capture.facet import Capture, Facet
from flexlock_prefect.exceptions import RunLockError
from flexlock_prefect.lock import LOCK_FILENAME, DataState, Lineage, RunLock

logger = logging.getLogger(__name__)

MAX_DEPTH = 16


def find_lineage(data: Mapping[str, DataState]) -> dict[str, Lineage]:
    """Data name → the upstream run whose save_dir holds that data, for inputs made by a run."""
    lineage = {}
    for name, state in data.items():
        for candidate in _self_and_ancestors(state.uri):
            if not storage.exists(storage.join(candidate, LOCK_FILENAME)):
                continue
            try:
                upstream = RunLock.load(candidate)
            except RunLockError as exc:
                logger.warning("input %r lies in %s, whose run.lock cannot be read: %s", name, candidate, exc)
                break
            lineage[name] = Lineage(logical_run_id=upstream.logical_run_id, fingerprint=upstream.fingerprint)
            break
    return lineage


def _collect(capture: Capture) -> None:
    capture.sections["lineage"] = find_lineage(capture.sections["data"])


FACET = Facet("capture-lineage", _collect)
"""Upstream runs whose save_dirs hold this run's data inputs."""


def _self_and_ancestors(url: str) -> Iterator[str]:
    scheme, path = url.split("://", 1)
    root = "/" if scheme == "file" else path.split("/", 1)[0]
    for _ in range(MAX_DEPTH):
        yield f"{scheme}://{path}"
        parent = posixpath.dirname(path.rstrip("/"))
        if not parent or parent == path or len(path) <= len(root):
            return
        path = parent
