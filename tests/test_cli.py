"""The `flexlock-prefect` command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from tests.helpers.git_repos import git, make_repo, write_files


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
    repo = make_repo(tmp_path / "project", {"train.py": "print('v1')\n", ".gitignore": "runs/\n"})
    write_files(repo, {"data/points.csv": "x,y\n1,2\n"})
    return repo


def _run(project: Path, name: str, **config) -> str:
    base = {"lr": 0.1, "input_data": str(project / "data"), "save_dir": str(project / "runs" / name)} | config
    _, lock = capture_run(base, data=["input_data"], repos={"code": project})
    lock.save()
    return str(project / "runs" / name)


def test_show_prints_the_record_and_json_round_trips(project: Path) -> None:
    save_dir = _run(project, "a")
    shown = cli("show", save_dir)
    assert shown.returncode == 0, shown.stderr
    for text in ("fingerprint", "lr", "input_data", "xxh3-128-tree", "code"):
        assert text in shown.stdout
    as_json = json.loads(cli("show", "--json", save_dir).stdout)
    assert as_json["logical_run_id"] == f"file://{save_dir}" and len(as_json["digest"]) == 64


def test_diff_of_runs_with_equal_inputs_exits_0(project: Path) -> None:
    a, b = _run(project, "a"), _run(project, "b")
    result = cli("diff", a, b)
    assert (result.returncode, result.stdout.strip()) == (0, "no differences in config, code, data or environment")


def test_diff_names_changed_config_code_files_and_data_and_exits_1(project: Path) -> None:
    a = _run(project, "a")
    write_files(project, {"train.py": "print('v2')\n", "model.py": "m\n", "data/points.csv": "x,y\n1,3\n"})
    b = _run(project, "b", lr=0.2)
    result = cli("diff", a, b)
    assert result.returncode == 1, result.stderr
    for text in ("config", "lr", "0.1", "0.2", "code", "M train.py", "A model.py", "data", "input_data"):
        assert text in result.stdout


def test_verify_passes_on_an_untouched_run(project: Path) -> None:
    result = cli("verify", _run(project, "a"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_verify_names_changed_data_and_exits_1(project: Path) -> None:
    save_dir = _run(project, "a")
    (project / "data" / "points.csv").write_text("x,y\n9,9\n")
    result = cli("verify", save_dir)
    assert result.returncode == 1
    assert "data input_data" in result.stdout and "changed" in result.stdout


def test_verify_names_a_lost_code_snapshot_and_exits_1(project: Path) -> None:
    write_files(project, {"train.py": "print('uncommitted')\n"})
    save_dir = _run(project, "a")
    ref = next(line.split()[1] for line in git(project, "show-ref").splitlines() if "refs/flexlock/" in line)
    git(project, "update-ref", "-d", ref)
    result = cli("verify", save_dir)
    assert result.returncode == 1 and "snapshot" in result.stdout


def test_verify_checks_an_expected_digest(project: Path) -> None:
    save_dir = _run(project, "a")
    assert cli("verify", save_dir, "--digest", "0" * 64).returncode == 1
    digest = json.loads(cli("show", "--json", save_dir).stdout)["digest"]
    assert cli("verify", save_dir, "--digest", digest).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "/nonexistent/run"], "no run.lock in /nonexistent/run"),
        (["diff", "/nonexistent/a", "/nonexistent/b"], "no run.lock in /nonexistent/a"),
        (["verify", "ftp://host/run"], "unsupported URL scheme 'ftp'"),
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


def test_the_console_script_is_installed() -> None:
    result = subprocess.run(["flexlock-prefect", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("show", "diff", "verify", "demo"):
        assert command in result.stdout


@pytest.mark.integration
def test_demo_runs_the_example_main_flow_and_shows_its_record(tmp_path: Path, prefect_api: str) -> None:
    result = cli("demo", "--root", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run record:" in result.stdout and "input_data" in result.stdout
    save_dir = result.stdout.split("run record:")[1].split()[0].removesuffix("/run.lock")
    assert cli("verify", save_dir).returncode == 0
    from flexlock_prefect import RunLock

    lock = RunLock.load(save_dir)
    assert lock.result.status == "completed"
    assert {"model.pkl", "metrics.json", "roc.png"} <= set(lock.result.outputs)


@pytest.mark.integration
def test_show_and_verify_an_s3_save_dir(tmp_path: Path, s3_bucket: str) -> None:
    (tmp_path / "d.csv").write_text("a\n1\n")
    _, lock = capture_run(
        {"input_data": str(tmp_path / "d.csv"), "save_dir": f"{s3_bucket}/runs/x"}, data=["input_data"]
    )
    lock.save()
    assert cli("show", f"{s3_bucket}/runs/x").returncode == 0
    assert cli("verify", f"{s3_bucket}/runs/x").returncode == 0
