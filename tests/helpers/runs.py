"""Run directories as a main flow leaves them, and the `flexlock-prefect` command as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flexlock_prefect.capture import FlowRunRef, capture_run


def make_save_dir(root: Path, name: str, recorded_by: str | None = None, **config) -> str:
    """A finished run directory under `root`: run.lock, metrics.json and a plot; its canonical URL.

    `recorded_by` names the main flow the record says it was captured in.
    """
    save_dir = root / name
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data.csv"
    if not data.exists():
        data.write_text("x,y\n1,2\n")
    base = {"project": "supersede-tests", "lr": 0.1, "input_data": str(data), "save_dir": str(save_dir)}
    flow_run = FlowRunRef(None, recorded_by, None) if recorded_by else None
    _, lock = capture_run(base | config, data=["input_data"], flow_run=flow_run)
    lock.save()
    (save_dir / "metrics.json").write_text(json.dumps({"acc": 0.9, "loss": {"train": 0.2}}))
    (save_dir / "plot.png").write_bytes(b"\x89PNG fake")
    return lock.logical_run_id


def cli(*args: str, columns: int = 250, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m flexlock_prefect ARGS` in this environment plus `env`, `columns` wide."""
    return subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns), **env},
    )
