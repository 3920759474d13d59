"""What batch work reports per item: a `RelogOutcome` per save_dir, a `ReconcileOutcome` per
logical run, and the one-line reason of an item that failed.

A batch never stops at a bad item: the item becomes a `failed` outcome whose `reason` says
what went wrong and where, with credentials scrubbed, and the batch goes on.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mlflow

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.redact import Redactor, strip_url_credentials
from flexlock_prefect.tracking.supersede import Repair

RelogKind = Literal["relogged", "skipped", "disabled", "failed"]
RELOG_KINDS: tuple[RelogKind, ...] = ("relogged", "skipped", "disabled", "failed")
ReconcileKind = Literal["repaired", "sound", "failed"]
RECONCILE_KINDS: tuple[ReconcileKind, ...] = ("repaired", "sound", "failed")
MAX_REASON = 500
"""Characters of a reason at most: one line in a table, not a traceback."""
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep


@dataclass(frozen=True)
class RelogOutcome:
    """What relog did with one save_dir (its canonical URL).

    `run_id` is the active run for `relogged` and `skipped`; for `failed`, the new run that
    ended FAILED (the previous active run stays active), or None when none was created.
    `reason` says why a `failed` one failed, in one line.
    """

    save_dir: str
    outcome: RelogKind
    run_id: str | None = None
    superseded_run_ids: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True)
class ReconcileOutcome:
    """What reconcile did with one logical run: `repaired` (with its `repairs`), `sound`
    (nothing to change) or `failed` (with its `reason`; run reconcile again once it is fixed).

    `save_dir` is the logical run's URL, or None when its runs do not say it.
    """

    logical_run_key: str
    outcome: ReconcileKind
    repairs: list[Repair] = field(default_factory=list)
    reason: str | None = None
    save_dir: str | None = None


def failure_reason(exc: BaseException) -> str:
    """One line about a failed item: the message of a `FlexlockError` as it is (those say what,
    where and how to fix); any other error's type and message, and where it was raised, in the
    caller's code when it passed through it (a diag body's line, say).

    Example:
        >>> failure_reason(ValueError("no 'acc' in metrics.json"))
        "ValueError: no 'acc' in metrics.json"
    """
    text = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())
    if not isinstance(exc, FlexlockError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        if where := _raised_at(exc):
            text += f" (at {where})"
    text = _scrub(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _raised_at(exc: BaseException) -> str | None:
    """`file.py:line in function` of the innermost frame outside libraries and this package, or
    of the innermost frame when there is none."""
    frames = traceback.extract_tb(exc.__traceback__)
    paths = sysconfig.get_paths()
    libraries = (_PACKAGE, *{paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    own = [f for f in frames if not f.filename.startswith(libraries) and "-packages/" not in f.filename]
    frame = (own or frames or [None])[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else None


def _scrub(text: str) -> str:
    """Credential-looking spans and the tracking URI's user part out of `text`."""
    uri = mlflow.get_tracking_uri()
    if (stripped := strip_url_credentials(uri)) != uri:
        text = text.replace(uri, stripped)
    return Redactor.from_settings().scrub(text)
