"""The `flexlock-prefect` command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from flexlock_prefect.lock import RunLock
from tests.helpers.git_repos import git, write_files
from tests.helpers.runs import locked_run, make_project


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repo with code and a data file, as a user's project would be."""
    return make_project(tmp_path / "project")


def test_show_prints_the_record_and_json_round_trips(project: Path) -> None:
    save_dir = locked_run(project, "a")
    shown = cli("show", save_dir)
    assert shown.returncode == 0, shown.stderr
    for text in ("fingerprint", "lr", "input_data", "xxh3-128-tree", "code"):
        assert text in shown.stdout
    as_json = json.loads(cli("show", "--json", save_dir).stdout)
    assert as_json["logical_run_id"] == f"file://{save_dir}" and len(as_json["digest"]) == 64


def test_diff_of_runs_with_equal_inputs_exits_0(project: Path) -> None:
    a, b = locked_run(project, "a"), locked_run(project, "b")
    result = cli("diff", a, b)
    assert (result.returncode, result.stdout.strip()) == (0, "no differences in config, code, data or environment")


def test_diff_names_changed_config_code_files_and_data_and_exits_1(project: Path) -> None:
    a = locked_run(project, "a")
    write_files(project, {"train.py": "print('v2')\n", "model.py": "m\n", "data/points.csv": "x,y\n1,3\n"})
    b = locked_run(project, "b", lr=0.2)
    result = cli("diff", a, b)
    assert result.returncode == 1, result.stderr
    for text in ("config", "lr", "0.1", "0.2", "code", "M train.py", "A model.py", "data", "input_data"):
        assert text in result.stdout


def test_verify_passes_on_an_untouched_run(project: Path) -> None:
    result = cli("verify", locked_run(project, "a"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_verify_names_changed_data_and_exits_1(project: Path) -> None:
    save_dir = locked_run(project, "a")
    (project / "data" / "points.csv").write_text("x,y\n9,9\n")
    result = cli("verify", save_dir)
    assert result.returncode == 1
    assert "data input_data" in result.stdout and "changed" in result.stdout


def test_verify_names_a_lost_code_snapshot_and_exits_1(project: Path) -> None:
    write_files(project, {"train.py": "print('uncommitted')\n"})
    save_dir = locked_run(project, "a")
    ref = next(line.split()[1] for line in git(project, "show-ref").splitlines() if "refs/flexlock/" in line)
    git(project, "update-ref", "-d", ref)
    result = cli("verify", save_dir)
    assert result.returncode == 1 and "snapshot" in result.stdout


def test_verify_checks_an_expected_digest(project: Path) -> None:
    save_dir = locked_run(project, "a")
    assert cli("verify", save_dir, "--digest", "0" * 64).returncode == 1
    digest = json.loads(cli("show", "--json", save_dir).stdout)["digest"]
    assert cli("verify", save_dir, "--digest", digest).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "/nonexistent/run"], "no run.lock in /nonexistent/run"),
        (["diff", "/nonexistent/a", "/nonexistent/b"], "no run.lock in /nonexistent/a"),
        (["verify", "ftp://host/run"], "unsupported URL scheme 'ftp'"),
        (["serve", "--queue", "gpu"], "unknown work queue 'gpu': serve 'diag' (diag, relog-all, promote, audit)"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_lock_is_reported_with_its_path_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "run.lock").write_text("flexlock: 1\nconfig: [")
    result = cli("show", str(tmp_path))
    assert result.returncode == 2 and f"{tmp_path}/run.lock" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("show").returncode == 2
    assert cli("no-such-command").returncode == 2


def _gc_snapshots_left(project: Path) -> list[str]:
    return git(project, "for-each-ref", "--format=%(refname)", "refs/flexlock/snapshots/").splitlines()


def test_gc_snapshots_lists_each_removed_snapshot_and_a_summary_a_dry_run_lists_the_same(project: Path) -> None:
    write_files(project, {"train.py": "print('kept')\n"})
    kept = RunLock.load(locked_run(project, "kept")).repos["code"].snapshot_ref
    write_files(project, {"train.py": "print('deleted')\n"})
    deleted = locked_run(project, "deleted")
    gone = RunLock.load(deleted).repos["code"].snapshot_ref
    shutil.rmtree(deleted)
    commit = git(project, "rev-parse", gone)[:12]
    dry = cli("gc", "--snapshots", "--root", "runs", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"would remove {gone} (commit {commit}, 0.0 days old) in {project}",
        "would remove 1 of 2 snapshots; kept 1 recorded by a run.lock; run.locks read: 1",
    ]
    assert sorted(_gc_snapshots_left(project)) == sorted([kept, gone])
    young = cli("gc", "--snapshots", "--root", "runs", "--older-than", "30", cwd=project)
    assert young.stdout.splitlines() == [
        "removed 0 of 2 snapshots; kept 1 recorded by a run.lock and 1 made within the last 30 days; run.locks read: 1"
    ]
    wet = cli("gc", "--snapshots", "--root", str(project / "runs"), "--repo", str(project / "data"))
    assert wet.returncode == 0, wet.stderr
    assert wet.stdout.splitlines() == [
        f"removed {gone} (commit {commit}, 0.0 days old) in {project}",
        "removed 1 of 2 snapshots; kept 1 recorded by a run.lock; run.locks read: 1",
    ]
    assert _gc_snapshots_left(project) == [kept]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gc", "--root", "runs"], "say what to collect: `gc --snapshots`"),
        (["gc", "--snapshots"], "gc --snapshots needs --root DIR"),
        (["gc", "--snapshots", "--root", "no-such-runs"], "no run.lock under no-such-runs: check the path"),
        (["gc", "--snapshots", "--root", "runs"], "runs/broken/run.lock is not valid YAML"),
    ],
)
def test_gc_errors_are_one_line_on_stderr_and_exit_2_and_remove_nothing(
    project: Path, args: list[str], message: str
) -> None:
    write_files(project, {"train.py": "print('deleted')\n"})
    shutil.rmtree(locked_run(project, "deleted"))
    write_files(project, {"runs/broken/run.lock": "flexlock: 1\nconfig: ["})
    result = cli(*args, cwd=project)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(_gc_snapshots_left(project)) == 1


def test_the_console_script_is_installed() -> None:
    result = subprocess.run(["flexlock-prefect", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("show", "diff", "verify", "demo"):
        assert command in result.stdout


@pytest.mark.integration
@pytest.mark.prefect
def test_the_readme_demo_runs_end_to_end_on_a_clean_home(tmp_path: Path) -> None:
    """The README's main-job command with nothing running and nothing configured."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"HOME": str(home), "COLUMNS": "200", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    result = subprocess.run(
        ["flexlock-prefect", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert lines["Prefect UI"].strip().startswith("http://127.0.0.1:")
    save_dir = lines["save_dir"].split()[0]
    assert save_dir.startswith(f"file://{tmp_path}/flexlock-demo/runs/train-")
    assert lines["MLflow UI"].strip() == f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/flexlock-demo/mlflow.db"
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path}/flexlock-demo/mlflow.db"
    run = MlflowClient(store).get_run(lines["MLflow run"].strip())
    assert run.data.tags["flexlock.status"] == "active" and run.data.tags["flexlock.logical_run_id"] == save_dir
    assert "diag logged it as MLflow run" in result.stderr
    assert (tmp_path / "flexlock-demo" / "mlruns").is_dir()  # everything under the demo root
    assert_the_promoted_demo_model_traces_back_to_its_run_lock(store, save_dir, env)


def assert_the_promoted_demo_model_traces_back_to_its_run_lock(store: str, save_dir: str, env: dict) -> None:
    """`trace <model>@prod` after the demo's model went dev → staging → prod names the approver,
    each repo's commit (and snapshot ref when dirty) and the data digests of its run.lock."""
    from flexlock_prefect.registry import move

    lock = RunLock.load(save_dir)
    model = lock.config["model_name"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        for to, by in (("dev", "ana"), ("staging", "bo"), ("prod", "cy")):
            move(model, "1", to, by=by, comment=f"to {to}", approved=True)
    env = env | {"MLFLOW_TRACKING_URI": store}
    traced = subprocess.run(["flexlock-prefect", "trace", f"{model}@prod"], env=env, capture_output=True, text=True)
    assert traced.returncode == 0, traced.stderr
    expected = ["approved_by", "cy", "staging → prod", *(f"{d.algorithm}:{d.digest}" for d in lock.data.values())]
    for repo in lock.repos.values():
        expected += [repo.commit, repo.snapshot_ref] if repo.dirty else [repo.commit]
    assert [text for text in expected if text not in traced.stdout] == []
    as_json = subprocess.run(["flexlock-prefect", "trace", "--json", f"{model}@prod"], env=env, capture_output=True)
    printed = json.loads(as_json.stdout)
    assert printed["version"]["tags"]["flexlock.approved_by"] == "cy"
    assert printed["record"]["digest"] == lock.digest
    assert {c["name"]: (c["commit"], c["snapshot_ref"]) for c in printed["record"]["code"]} == {
        name: (repo.commit, repo.snapshot_ref) for name, repo in lock.repos.items()
    }
    assert {d["name"]: d["digest"] for d in printed["record"]["data"]} == {
        name: f"{d.algorithm}:{d.digest}" for name, d in lock.data.items()
    }


@pytest.mark.integration
def test_show_and_verify_an_s3_save_dir(tmp_path: Path, s3_bucket: str) -> None:
    (tmp_path / "d.csv").write_text("a\n1\n")
    _, lock = capture_run(
        {"input_data": str(tmp_path / "d.csv"), "save_dir": f"{s3_bucket}/runs/x"}, data=["input_data"]
    )
    lock.save()
    assert cli("show", f"{s3_bucket}/runs/x").returncode == 0
    assert cli("verify", f"{s3_bucket}/runs/x").returncode == 0


@pytest.mark.integration
def test_approve_errors_are_one_line_and_exit_2(prefect_api: str) -> None:
    from prefect import flow

    @flow(name="not-a-promotion")
    def finished() -> None: ...

    state = finished(return_state=True)
    cases = {
        "not-a-uuid": "is not a flow run id",
        "00000000-0000-4000-8000-000000000000": "no flow run 00000000-0000-4000-8000-000000000000",
        str(state.state_details.flow_run_id): "is COMPLETED, not paused for approval",
    }
    for flow_run_id, message in cases.items():
        result = cli("approve", flow_run_id)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
