"""The package's layers and import-time manners (DESIGN.md §2).

Dependencies point one way: the record side (`capture`, `lock`, `storage`) knows neither Prefect
nor MLflow, and the MLflow side (`tracking`) does not know Prefect. Importing any module changes
nothing in the process: no environment variable, no OmegaConf resolver, no file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import flexlock_prefect
from flexlock_prefect.capture import config as config_module
from flexlock_prefect.capture.config import load_config

PROJECT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def __init__(self, names):
            self.names = names

        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in self.names:
                raise ImportError(f"{fullname} is made unimportable by this test")
            return None

    sys.meta_path.insert(0, Blocked(BLOCKED_NAMES))
    """
)


def run_python(code: str, *, blocked: set[str] = frozenset(), cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    script = BLOCKER.replace("BLOCKED_NAMES", repr(set(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_record_side_imports_and_works_without_prefect_or_mlflow(tmp_path: Path) -> None:
    result = run_python(
        f"""
        import subprocess

        from flexlock_prefect import storage
        from flexlock_prefect.capture import capture_run
        from flexlock_prefect.gc import gc_snapshots
        from flexlock_prefect.lock import RunLock
        from flexlock_prefect.provenance import checks, lock_record
        from flexlock_prefect.metrics import read_metrics
        from flexlock_prefect.study import Space, TrialPlanner, plan_study
        from flexlock_prefect.sweeplock import SweepLock
        from flexlock_prefect.verify import verify_lock

        _, lock = capture_run({{"lr": 0.1, "save_dir": {str(tmp_path / "run")!r}}})
        lock.save()
        assert RunLock.load(lock.logical_run_id).digest == lock.digest
        assert read_metrics(lock.logical_run_id) == {{}}
        capture = lambda partial: capture_run({{"lr": 0.1, "save_dir": "???"}}, partial=partial)[1]
        study = plan_study(Space.of(grid={{"lr": [0.1]}}), TrialPlanner.of({str(tmp_path / "sweep")!r}, capture))
        assert study.trials[0].key == lock.fingerprint
        SweepLock.create({str(tmp_path / "sweep")!r}, study, "train", None, "max").save()
        assert verify_lock(lock) == []
        subprocess.run(["git", "init", "-q", {str(tmp_path / "repo")!r}], check=True)
        assert gc_snapshots([{str(tmp_path / "repo")!r}], [{str(tmp_path)!r}]).removed == ()
        assert lock_record(lock).config == {{"lr": "0.1"}} and checks(lock) == ()
        print(storage.canonical_url({str(tmp_path)!r}))
        """,
        blocked={"prefect", "mlflow"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"file://{tmp_path}"


def test_the_mlflow_side_imports_without_prefect() -> None:
    result = run_python(
        """
        import flexlock_prefect.tracking
        from flexlock_prefect.tracking import client, locking, model_state, outputs, record, registry, relog, supersede
        from flexlock_prefect.tracking import tags, trace
        from flexlock_prefect import trace_view
        from flexlock_prefect import registry as public_registry
        print(sorted(name for name in __import__("sys").modules if name.split(".")[0] == "prefect"))
        """,
        blocked={"prefect"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Modules whose import does work on purpose: the example flows' warm-up, preloaded into a fork
# server (flexlock_prefect.warm), imports scikit-learn, which sets its OpenMP variables.
WORK_AT_IMPORT = {"flexlock_prefect.examples.warmup"}


def test_importing_every_module_writes_no_environment_variable_and_registers_no_resolver() -> None:
    modules = sorted(
        {
            "flexlock_prefect." + ".".join(path.relative_to(PROJECT / "flexlock_prefect").with_suffix("").parts)
            for path in (PROJECT / "flexlock_prefect").rglob("*.py")
            if path.name not in {"__init__.py", "__main__.py"}
        }
        - WORK_AT_IMPORT
    )
    result = run_python(
        f"""
        import importlib, json, os
        before = dict(os.environ)
        for name in {modules!r}:
            importlib.import_module(name)
        from omegaconf import OmegaConf
        ours = lambda key: not key.startswith("_MLFLOW_")  # MLflow's own telemetry session, not ours
        changed = {{k: v for k, v in os.environ.items() if before.get(k) != v and ours(k)}}
        removed = sorted(k for k in set(before) - set(os.environ) if ours(k))
        print(json.dumps({{"changed": changed, "removed": removed,
                           "now": OmegaConf.has_resolver("now")}}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"changed": {}, "removed": [], "now": False}


def test_resolving_a_config_leaves_no_resolver_behind() -> None:
    assert load_config({"a": "${now:%Y}", "b": "${now:%Y}", "save_dir": "/tmp/x"}).a.isdigit()
    assert not OmegaConf.has_resolver("now")


def test_a_now_resolver_of_the_process_is_kept_and_said_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "_warned_foreign_now", False)
    OmegaConf.register_resolver("now", lambda fmt="": "theirs")
    try:
        cfg = load_config({"stamp": "${now:%Y}", "save_dir": "/tmp/x"})
        assert cfg.stamp == "theirs"
        assert OmegaConf.has_resolver("now")
    finally:
        OmegaConf.clear_resolver("now")
    assert "registered outside flexlock-prefect" in caplog.text


def test_the_version_comes_from_the_installed_distribution() -> None:
    assert flexlock_prefect.__version__ == metadata.version("flexlock-prefect")


def test_the_example_flows_write_nothing_when_imported(tmp_path: Path) -> None:
    result = run_python(
        """
        from flexlock_prefect.examples import diag, train
        print(train.EXAMPLE_DATA.is_file(), train.EXAMPLE_DATA.parent.name)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True data"  # scikit-learn's own copy, read where it is
    assert list(tmp_path.iterdir()) == []
