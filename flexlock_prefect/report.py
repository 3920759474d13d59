"""A run.lock as titled tables of text: rendered by the CLI with rich, as markdown by artifacts."""

from __future__ import annotations

from dataclasses import dataclass

from flexlock_prefect.capture.config import flatten, value_text
from flexlock_prefect.lock import RunLock, logical_run_key


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


def human_size(size: int) -> str:
    """`1536` → `1.5 KiB`."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"
