"""The README's "Use it in your project" code runs as written, in a user's git repository,
against a real Prefect server and MLflow server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import runs_of
from flexlock_prefect.tracking.tags import ACTIVE, STATUS
from tests.helpers.git_repos import commit_all, make_repo

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> str:
    """The first ```python block of the README section `## <title>`."""
    section = README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_use_it_in_your_project_code_records_deploys_and_relogs(
    prefect_api: str, mlflow_server: str, tmp_path: Path
) -> None:
    project = make_repo(tmp_path / "project", {"data/train.csv": "x,y\n1,2\n", "my_project/__init__.py": ""})
    (project / "my_project" / "pipelines.py").write_text(section_code("Use it in your project"))
    commit_all(project, "my pipelines")
    script = textwrap.dedent(
        """
        from flexlock_prefect import RunLock, relog
        from my_project import pipelines

        names = sorted(f"{d.flow_name}/{d.name}" for d in pipelines.pipeline.to_deployments())
        save_dir = pipelines.train()
        lock = RunLock.load(save_dir)
        assert not lock.repos["code"].dirty and lock.data["input_data"].files == 1, lock
        [outcome] = relog([save_dir], diag=pipelines.diag)
        print(names, save_dir, outcome.run_id)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names, save_dir, run_id = result.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert names == "['diag/train', 'promote/train', 'registry-audit/train', 'relog-all/train', 'train/train']"
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["acc"] == 0.9 and run.data.tags[STATUS] == ACTIVE
    assert client.get_experiment(run.info.experiment_id).name == "my-project"
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert [r.info.run_id for r in runs_of(client, experiments, logical_run_key(save_dir))] == [run_id]
