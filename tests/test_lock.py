"""run.lock: schema, fingerprint and digest, validation on load, atomic writes locally and on S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flexlock_prefect import RunLock, storage
from flexlock_prefect.capture import capture_run
from flexlock_prefect.exceptions import RunLockError, StorageError
from flexlock_prefect.lock import LOCK_FILENAME, RunResult, utc_now


def _capture(tmp_path: Path, save_dir: str | None = None, **config) -> RunLock:
    data = tmp_path / "input.csv"
    if not data.exists():
        data.write_text("x,y\n1,2\n")
    base = {"lr": 0.1, "input_data": str(data), "save_dir": save_dir or str(tmp_path / "run")} | config
    return capture_run(base, data=["input_data"])[1]


def test_a_saved_lock_loads_back_equal_with_the_same_digest(tmp_path: Path) -> None:
    lock = _capture(tmp_path)
    url = lock.save()
    assert url == f"file://{tmp_path}/run/{LOCK_FILENAME}"
    loaded = RunLock.load(str(tmp_path / "run"))
    assert loaded == lock and loaded.digest == lock.digest
    assert list(yaml.safe_load((tmp_path / "run" / LOCK_FILENAME).read_text())) == [
        "flexlock",
        "logical_run_id",
        "created_at",
        "config",
        "repos",
        "data",
        "env",
        "prefect",
        "lineage",
        "fingerprint",
        "result",
    ]


def test_logical_run_id_is_the_canonical_url_of_the_save_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    lock = _capture(tmp_path, save_dir=str(tmp_path / "link") + "/")
    assert lock.logical_run_id == f"file://{tmp_path}/real"
    assert storage.canonical_url("s3://bucket//a/b/") == "s3://bucket/a/b"


def test_fingerprint_depends_on_inputs_only_not_on_save_dir_or_time(tmp_path: Path) -> None:
    a = _capture(tmp_path, save_dir=str(tmp_path / "a"), log="${save_dir}/log.txt")
    time.sleep(0.01)
    b = _capture(tmp_path, save_dir=str(tmp_path / "b"), log="${save_dir}/log.txt")
    assert a.fingerprint == b.fingerprint
    assert a.digest != b.digest  # the files differ (save_dir, created_at)
    assert _capture(tmp_path, lr=0.2).fingerprint != a.fingerprint
    (tmp_path / "input.csv").write_text("x,y\n1,3\n")
    assert _capture(tmp_path, save_dir=str(tmp_path / "a")).fingerprint != a.fingerprint


def test_digest_changes_when_anything_in_the_record_changes(tmp_path: Path) -> None:
    lock = _capture(tmp_path)
    now = utc_now()
    finished = lock.with_result(
        RunResult(status="completed", started_at=now, finished_at=now, duration_s=0.0, outputs={}, error=None)
    )
    assert finished.digest != lock.digest and finished.fingerprint == lock.fingerprint


def _write(tmp_path: Path, text: str) -> str:
    save_dir = tmp_path / "bad"
    save_dir.mkdir(exist_ok=True)
    (save_dir / LOCK_FILENAME).write_text(text)
    return str(save_dir)


def test_a_missing_lock_is_an_error_naming_the_save_dir(tmp_path: Path) -> None:
    with pytest.raises(RunLockError, match=f"no run.lock in {tmp_path}/nothing"):
        RunLock.load(str(tmp_path / "nothing"))


def test_an_unknown_schema_version_is_refused_with_an_upgrade_hint(tmp_path: Path) -> None:
    text = _capture(tmp_path).to_yaml().replace("flexlock: 1", "flexlock: 2")
    with pytest.raises(RunLockError, match="schema version 2.*upgrade flexlock-prefect"):
        RunLock.load(_write(tmp_path, text))


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_a_truncated_lock_is_refused_naming_the_file(tmp_path: Path, cut: float) -> None:
    text = _capture(tmp_path).to_yaml()
    save_dir = _write(tmp_path, text[: int(len(text) * cut)])
    with pytest.raises(RunLockError, match=f"{save_dir}/run.lock"):
        RunLock.load(save_dir)


@pytest.mark.parametrize("text", ["{not: yaml: at all", "- a list\n", "hello", ""])
def test_a_corrupt_lock_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    save_dir = _write(tmp_path, text)
    with pytest.raises(RunLockError, match=f"{save_dir}/run.lock"):
        RunLock.load(save_dir)


def test_inputs_edited_after_capture_are_detected_by_the_fingerprint(tmp_path: Path) -> None:
    text = _capture(tmp_path).to_yaml().replace("lr: 0.1", "lr: 0.5")
    with pytest.raises(RunLockError, match="edited after capture"):
        RunLock.load(_write(tmp_path, text))


def test_a_failed_write_leaves_the_previous_lock_intact_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    lock = _capture(tmp_path)
    lock.save()
    before = (tmp_path / "run" / LOCK_FILENAME).read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StorageError, match="No space left on device"):
        _capture(tmp_path, lr=0.9).save()
    assert (tmp_path / "run" / LOCK_FILENAME).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILENAME]


WRITER = textwrap.dedent(
    """
    import sys
    from flexlock_prefect.capture import capture_run
    save_dir, data = sys.argv[1], sys.argv[2]
    i = 0
    while True:
        i += 1
        config = {"i": i, "blob": "x" * 200_000, "input_data": data, "save_dir": save_dir}
        capture_run(config, data=["input_data"])[1].save()
        print(i, flush=True)
    """
)


def test_a_writer_killed_mid_write_never_leaves_a_partial_lock(tmp_path: Path) -> None:
    save_dir = tmp_path / "run"
    first = _capture(tmp_path, save_dir=str(save_dir))
    first.save()
    for attempt in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(save_dir), str(tmp_path / "input.csv")],
            stdout=subprocess.PIPE,
            text=True,
        )
        writer.stdout.readline()  # at least one full write happened
        time.sleep(0.05 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        lock = RunLock.load(str(save_dir))  # always a whole, valid file: the old one or a new one
        assert lock.config.get("i", 0) >= 1


def test_env_records_python_packages_and_lockfiles_at_repo_roots(tmp_path: Path) -> None:
    from flexlock_prefect.capture.env import capture_env

    (tmp_path / "uv.lock").write_text("lock")
    (tmp_path / "requirements-dev.txt").write_text("pytest")
    (tmp_path / "notes.txt").write_text("no")
    env = capture_env({"code": tmp_path})
    assert env.python.count(".") == 2
    assert env.packages["pyyaml"] and env.packages["flexlock-prefect"]
    assert set(env.lockfiles) == {"code/uv.lock", "code/requirements-dev.txt"}


def test_inputs_inside_another_run_record_their_lineage(tmp_path: Path) -> None:
    upstream = _capture(tmp_path, save_dir=str(tmp_path / "prep"))
    upstream.save()
    (tmp_path / "prep" / "features.csv").write_text("f\n1\n")
    _, lock = capture_run(
        {"features": str(tmp_path / "prep" / "features.csv"), "save_dir": str(tmp_path / "train")},
        data=["features"],
    )
    assert lock.lineage["features"].logical_run_id == upstream.logical_run_id
    assert lock.lineage["features"].fingerprint == upstream.fingerprint


@pytest.mark.integration
def test_a_lock_is_saved_to_and_loaded_from_an_s3_save_dir(tmp_path: Path, s3_bucket: str) -> None:
    save_dir = f"{s3_bucket}/runs/a b/ünï"
    lock = _capture(tmp_path, save_dir=save_dir)
    assert lock.save() == f"{save_dir}/run.lock"
    loaded = RunLock.load(save_dir + "/")
    assert loaded == lock and loaded.logical_run_id == save_dir


@pytest.mark.integration
def test_s3_data_and_save_dir_together(tmp_path: Path, s3_bucket: str) -> None:
    fs, _ = storage.filesystem(s3_bucket)
    fs.pipe_file(f"{s3_bucket.removeprefix('s3://')}/data/train.csv", b"x\n1\n")
    _, lock = capture_run({"input_data": f"{s3_bucket}/data", "save_dir": f"{s3_bucket}/runs/1"}, data=["input_data"])
    lock.save()
    assert RunLock.load(f"{s3_bucket}/runs/1").data["input_data"].uri == f"{s3_bucket}/data"


def test_installed_packages_are_read_again_after_an_install(tmp_path: Path, monkeypatch) -> None:
    from flexlock_prefect.capture.env import installed_packages

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert "flexlock-canary-pkg" not in installed_packages()
    dist = site / "flexlock_canary_pkg-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: flexlock-canary-pkg\nVersion: 1.2.3\n")
    os.utime(site, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert installed_packages()["flexlock-canary-pkg"] == "1.2.3"
