"""No secret given to a run (config keys, config URLs, git remotes) is ever written to run.lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from tests.helpers.git_repos import git, make_repo, write_files

CANARIES = {
    "password": "CANARY-pw-4f1d",
    "url": "CANARY-url-9a2e",
    "token": "CANARY-tok-77c3",
    "remote": "CANARY-remote-3b8a",
    "aws": "AKIACANARY0000000001",
}


def _capture_with_canaries(tmp_path: Path, save_dir: str) -> str:
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    git(repo, "remote", "add", "origin", f"https://deploy:{CANARIES['remote']}@git.example.com/team/repo.git")
    write_files(repo, {"a.py": "x = 2\n"})  # dirty, so a snapshot is made too
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    config = {
        "db": {"password": CANARIES["password"], "uri": f"postgresql://ml:{CANARIES['url']}@db:5432/x"},
        "hf_token": CANARIES["token"],
        "nested": [{"aws_key_id": CANARIES["aws"]}],
        "input_data": str(data),
        "save_dir": save_dir,
    }
    _, lock = capture_run(
        config, overrides=[f"+extra.apiKey={CANARIES['token']}"], data=["input_data"], repos={"code": repo}
    )
    return lock.save()


def _assert_no_canary(text: str) -> None:
    for name, canary in CANARIES.items():
        assert canary not in text, f"{name} secret leaked"


def test_no_canary_secret_reaches_a_local_run_lock_or_cli_output(tmp_path: Path) -> None:
    _capture_with_canaries(tmp_path, str(tmp_path / "run"))
    text = (tmp_path / "run" / "run.lock").read_text()
    _assert_no_canary(text)
    assert "<redacted>" in text and "https://git.example.com/team/repo.git" in text
    for args in (["show", str(tmp_path / "run")], ["show", "--json", str(tmp_path / "run")]):
        shown = subprocess.run([sys.executable, "-m", "flexlock_prefect", *args], capture_output=True, text=True)
        _assert_no_canary(shown.stdout + shown.stderr)


@pytest.mark.integration
def test_no_canary_secret_reaches_an_s3_run_lock(tmp_path: Path, s3_bucket: str) -> None:
    from flexlock_prefect import storage

    url = _capture_with_canaries(tmp_path, f"{s3_bucket}/runs/secret")
    _assert_no_canary(storage.read_bytes(url).decode())
