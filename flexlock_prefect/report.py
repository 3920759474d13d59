"""Titled tables of text, rendered by the CLI with rich and by artifacts for Prefect: a run.lock,
the outcomes of a relog or reconcile batch, and the findings of a registry audit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flexlock_prefect.capture.config import flatten, value_text
from flexlock_prefect.lock import RunLock, logical_run_key, save_dir_name

if TYPE_CHECKING:  # the MLflow side is imported only by those that produce outcomes
    from flexlock_prefect.sweeplock import SweepLock
    from flexlock_prefect.tracking.audit import Finding
    from flexlock_prefect.tracking.outcomes import ReconcileOutcome, RelogOutcome

MAX_NAMED = 10
"""Failed items named in a failure message at most; the table names them all."""


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]


def lock_tables(lock: RunLock) -> list[Table]:
    """The sections of a lock a person reads first: summary, config, code, data, environment."""
    summary = [
        ("save_dir", lock.logical_run_id),
        ("logical run key", logical_run_key(lock.logical_run_id)),
        ("created", lock.created_at),
        ("fingerprint", lock.fingerprint),
        ("digest", lock.digest),
    ]
    if lock.result:
        summary += [
            ("status", lock.result.status),
            ("duration", f"{lock.result.duration_s:.1f} s"),
        ]
        if lock.result.error:
            summary.append(("error", lock.result.error))
    if lock.prefect:
        summary.append(("flow run", f"{lock.prefect.flow_name} ({lock.prefect.flow_run_id})"))
    tables = [
        Table("Run", ("field", "value"), summary),
        Table("Config", ("key", "value"), [(k, value_text(v)) for k, v in flatten(lock.config).items()]),
        Table(
            "Code",
            ("repo", "commit", "branch", "dirty", "snapshot", "remote"),
            [
                (
                    name,
                    r.commit or "(no commit)",
                    r.branch or "(detached)",
                    "yes" if r.dirty else "no",
                    r.snapshot_ref or "",
                    r.remote or "",
                )
                for name, r in lock.repos.items()
            ],
        ),
        Table(
            "Data",
            ("name", "uri", "digest", "size", "files"),
            [
                (name, d.uri, f"{d.algorithm}:{d.digest}", human_size(d.size), str(d.files))
                for name, d in lock.data.items()
            ],
        ),
        Table(
            "Environment",
            ("field", "value"),
            [("python", lock.env.python), ("platform", lock.env.platform), ("packages", str(len(lock.env.packages)))]
            + [(f"lockfile {path}", digest) for path, digest in lock.env.lockfiles.items()],
        ),
    ]
    if lock.lineage:
        tables.append(
            Table(
                "Lineage",
                ("input", "upstream run", "fingerprint"),
                [(name, up.logical_run_id, up.fingerprint) for name, up in lock.lineage.items()],
            )
        )
    return tables


def relog_table(outcomes: Sequence[RelogOutcome]) -> Table:
    """Every save_dir of a relog with its outcome, MLflow run, superseded runs and reason."""
    return Table(
        _title(len(outcomes), "save_dirs", Counter(o.outcome for o in outcomes), ("relogged", "skipped", "disabled")),
        ("save_dir", "outcome", "MLflow run", "supersedes", "reason"),
        [(o.save_dir, o.outcome, o.run_id or "", ", ".join(o.superseded_run_ids), o.reason or "") for o in outcomes],
    )


def reconcile_table(outcomes: Sequence[ReconcileOutcome]) -> Table:
    """A row per repair of each repaired logical run and per failed logical run; sound ones are
    only counted in the title (a whole server's reconcile checks every logical run)."""
    rows: list[tuple[str, ...]] = []
    for o in outcomes:
        name = o.save_dir or o.logical_run_key
        rows += [(name, o.outcome, r.run_id, r.change) for r in o.repairs]
        if o.outcome == "failed":
            rows.append((name, o.outcome, "", o.reason or ""))
    counts = Counter(o.outcome for o in outcomes)
    return Table(
        _title(len(outcomes), "logical runs", counts, ("repaired", "sound")),
        ("logical run", "outcome", "MLflow run", "change or reason"),
        rows,
    )


def sweep_table(lock: SweepLock) -> Table:
    """Every trial of a sweep: its status, values, metric, save_dir and why it failed; the best
    trial is marked `best`."""
    counts = Counter("reused" if t.reused else t.status for t in lock.trials)
    best = lock.best.trial_key_hash if lock.best else None
    metric = lock.metric or "metric"
    return Table(
        _title(len(lock.trials), "trials", counts, ("completed", "reused", "running", "pending")),
        ("trial", "status", "values", metric, "save_dir", "error"),
        [
            (
                save_dir_name(t.save_dir) + (" (best)" if t.trial_key_hash == best else ""),
                "reused" if t.reused else t.status,
                ", ".join(f"{key}={value_text(value)}" for key, value in t.values.items()),
                "" if t.metric_value is None else f"{t.metric_value:.6g}",
                t.save_dir,
                t.error or "",
            )
            for t in lock.trials
        ],
    )


def relog_failures(outcomes: Sequence[RelogOutcome]) -> str | None:
    """The message naming the failed save_dirs, or None when none failed."""
    return _failures([o.save_dir for o in outcomes if o.outcome == "failed"], len(outcomes), "save_dirs", "relog")


def reconcile_failures(outcomes: Sequence[ReconcileOutcome]) -> str | None:
    """The message naming the logical runs reconcile could not repair, or None."""
    failed = [o.save_dir or o.logical_run_key for o in outcomes if o.outcome == "failed"]
    return _failures(failed, len(outcomes), "logical runs", "reconcile")


def audit_table(findings: Sequence[Finding], audited: Sequence[str], repair: bool = False) -> Table:
    """Every finding of an audit of the `audited` models, one row each; with `repair`, whether
    it was repaired or remains for a person."""
    subject = audited[0] if len(audited) == 1 else counted(len(audited), "model")
    repaired = sum(f.repaired for f in findings)
    title = f"audit of {subject}: {counted(len(findings), 'finding')}"
    columns = ("model", "version", "alias/state", "kind", "finding")
    rows = [(f.model, f.version, f.state or "", f.kind, f.message) for f in findings]
    if not repair:
        return Table(title, columns, rows)
    outcomes = ["repaired" if f.repaired else "unresolved" for f in findings]
    return Table(
        f"{title}, {repaired} repaired, {len(findings) - repaired} unresolved",
        (*columns, "repair"),
        [(*row, outcome) for row, outcome in zip(rows, outcomes, strict=True)],
    )


def audit_failures(failed: Sequence[str], total: int) -> str | None:
    """The message naming the models an audit could not read, or None."""
    return _failures(list(failed), total, "models", "audit")


def _title(total: int, items: str, counts: Counter[str], kinds: tuple[str, ...]) -> str:
    parts = [f"{counts[kind]} {kind}" for kind in (*kinds, "failed") if counts[kind] or kind == "failed"]
    return f"{total} {items}: {', '.join(parts)}"


def _failures(failed: list[str], total: int, items: str, verb: str) -> str | None:
    if not failed:
        return None
    named = ", ".join(failed[:MAX_NAMED]) + (f" and {len(failed) - MAX_NAMED} more" if len(failed) > MAX_NAMED else "")
    return (
        f"{len(failed)} of {total} {items} failed to {verb}: {named}; each one's reason is in the outcome table, "
        f"and {verb} them again once fixed"
    )


def counted(count: int, noun: str) -> str:
    """`1 finding`, `2 findings`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(size: int) -> str:
    """`1536` → `1.5 KiB`."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"
