"""One capture order: `locked_flow` and `capture_run` run the same facets and record the same run.lock.

The flow differs only in what a flow run adds: the `prefect` section (flow run, names, redacted
parameters), the `result` section and the moment of creation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flexlock_prefect import RunLock, locked_flow
from flexlock_prefect.capture import FACETS, capture_run
from flexlock_prefect.redact import REDACTED
from tests.helpers.git_repos import make_repo, write_files
from tests.helpers.prefect_api import wait_for_task_runs

pytestmark = pytest.mark.integration

CONFIG = {
    "lr": 0.1,
    "db": {"password": "CANARY-pw-77aa", "host": "localhost"},
    "input_data": "???",
    "upstream": "???",
    "save_dir": "???",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A dirty git repo with a lockfile, and two data inputs, one inside an upstream run's save_dir."""
    repo = make_repo(tmp_path / "code", {"train.py": "print('hi')\n", "requirements.txt": "numpy\n"})
    write_files(repo, {"train.py": "print('changed')\n", "notes.md": "untracked\n"})
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    _, upstream = capture_run({"save_dir": str(tmp_path / "upstream")})
    upstream.save()
    (tmp_path / "upstream" / "features.csv").write_text("f\n1\n")
    return tmp_path


def _overrides(project: Path, save_dir: Path) -> list[str]:
    return [
        f"input_data={project / 'data.csv'}",
        f"upstream={project / 'upstream' / 'features.csv'}",
        f"save_dir={save_dir}",
        "lr=0.2",
        "db.password=CANARY-override-91c2",
    ]


def _train(project: Path):
    @locked_flow(config=CONFIG, data=["input_data", "upstream"], repos={"code": str(project / "code")}, name="order")
    def order(cfg) -> None:
        Path(cfg.save_dir, "out.txt").write_text("done\n")

    return order


def test_a_flow_run_and_capture_run_record_the_same_run_lock_apart_from_the_prefect_section(
    prefect_api: str, project: Path
) -> None:
    save_dir = project / "runs" / "a"
    overrides = _overrides(project, save_dir)
    flow_lock = RunLock.load(_train(project)(overrides=overrides, config={"db": {"host": "db.internal"}}))
    _, direct = capture_run(
        CONFIG,
        overrides=overrides,
        partial={"db": {"host": "db.internal"}},
        data=["input_data", "upstream"],
        repos={"code": str(project / "code")},
    )

    def comparable(lock: RunLock) -> dict:
        return {k: v for k, v in lock.to_dict().items() if k not in {"created_at", "prefect", "result"}}

    assert comparable(flow_lock) == comparable(direct)
    assert flow_lock.fingerprint == direct.fingerprint
    assert flow_lock.repos["code"].dirty and flow_lock.lineage["upstream"].logical_run_id.endswith("/upstream")
    assert flow_lock.config["db"] == {"password": REDACTED, "host": "db.internal"}
    assert direct.prefect is None and flow_lock.result.status == "completed"


def test_the_flow_records_its_parameters_redacted(prefect_api: str, project: Path) -> None:
    lock = RunLock.load(
        _train(project)(
            overrides=_overrides(project, project / "runs" / "b"),
            config={"db": {"password": "CANARY-param-3b0d"}},
        )
    )
    assert lock.prefect.flow_name == "order"
    assert lock.prefect.parameters["overrides"][-1] == f"db.password={REDACTED}"
    assert lock.prefect.parameters["config"] == {"db": {"password": REDACTED}}
    assert "CANARY" not in lock.to_yaml()


def test_each_facet_is_a_task_run_named_as_the_facet_in_capture_order(prefect_api: str, project: Path) -> None:
    lock = RunLock.load(_train(project)(overrides=_overrides(project, project / "runs" / "c")))
    after_capture = ["write-run-lock", "order", "record-result", "publish-artifacts", "emit-event"]
    task_runs = wait_for_task_runs(lock.prefect.flow_run_id, len(FACETS) + len(after_capture))
    names = [run.name.rsplit("-", 1)[0] for run in task_runs]
    assert names == [facet.name for facet in FACETS] + after_capture
