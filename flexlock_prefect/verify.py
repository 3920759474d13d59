"""Does a run's record still match the world: data bytes, code objects, the lock's own digest?"""

from __future__ import annotations

from dataclasses import dataclass

from flexlock_prefect.capture.data import hash_data
from flexlock_prefect.capture.git import repo_problems
from flexlock_prefect.capture.hashing import ALGORITHMS
from flexlock_prefect.exceptions import DataCaptureError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.settings import FlexlockSettings, get_settings


@dataclass(frozen=True)
class Mismatch:
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def verify_lock(
    lock: RunLock,
    *,
    expected_digest: str | None = None,
    settings: FlexlockSettings | None = None,
) -> list[Mismatch]:
    """Re-hash every data input (bypassing the stat cache) and look up every code object.

    The lock's inputs were already checked against its fingerprint when it was loaded; with
    `expected_digest` (as recorded by MLflow or Prefect) the whole file is checked too.

    Example:
        >>> verify_lock(RunLock.load("runs/a"))  # doctest: +SKIP
        [Mismatch(what='data input_data', detail='digest 5c0f... is now 77aa...')]
    """
    settings = settings or get_settings()
    mismatches: list[Mismatch] = []
    for name, recorded in lock.data.items():
        what = f"data {name}"
        if recorded.algorithm not in ALGORITHMS:
            mismatches.append(Mismatch(what, f"recorded with unknown algorithm {recorded.algorithm!r}"))
            continue
        rehash = settings.model_copy(update={"stat_cache": False, "hash_algorithm": recorded.algorithm})
        try:
            current = hash_data(recorded.uri, settings=rehash)
        except DataCaptureError as exc:
            mismatches.append(Mismatch(what, str(exc)))
            continue
        if current.digest != recorded.digest:
            mismatches.append(
                Mismatch(
                    what,
                    f"{recorded.uri} changed: digest {recorded.digest} is now {current.digest} "
                    f"({recorded.files} → {current.files} files, {recorded.size} → {current.size} bytes)",
                )
            )
    for name, repo in lock.repos.items():
        mismatches += [Mismatch(f"code {name}", problem) for problem in repo_problems(repo)]
    if expected_digest and expected_digest != lock.digest:
        mismatches.append(Mismatch("run.lock", f"digest {lock.digest} differs from the expected {expected_digest}"))
    return mismatches
