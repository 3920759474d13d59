"""One registered version per logical run and model content (DESIGN.md §6), through the example
diag against the real MLflow server: relogs of the same model reuse its version, a changed model
registers a new one, and both carry the digests that tie them to their save_dir and record."""

from __future__ import annotations

import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect.examples import diag as example_diag
from flexlock_prefect.examples import train as example_train
from flexlock_prefect.lock import RunLock, logical_run_key
from flexlock_prefect.tracking.registration import Registration
from flexlock_prefect.tracking.tags import LOCK_DIGEST, LOGICAL_RUN_KEY, MODEL_DIGEST


def versions(name: str) -> dict[str, dict[str, str]]:
    return {v.version: dict(v.tags) for v in MlflowClient().search_model_versions(f"name='{name}'")}


def identity(tags: dict[str, str]) -> dict[str, str]:
    return {key: tags.get(key) for key in (LOGICAL_RUN_KEY, LOCK_DIGEST, MODEL_DIGEST)}


@pytest.mark.integration
def test_relogs_of_one_model_share_a_version_and_a_changed_model_gets_a_new_one(
    prefect_api: str, mlflow_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"reg-{uuid.uuid4().hex[:6]}"
    data = example_train.prepare_example_data(tmp_path / "data.csv")
    save_dir = example_train.train(overrides=[f"input_data={data}", f"save_dir={tmp_path}/run", f"model_name={name}"])
    lock = RunLock.load(save_dir)
    model_file = tmp_path / "run" / "model.pkl"
    first_bytes = lock.result.outputs["model.pkl"]  # what the main run wrote: `<algorithm>:<hex>`

    runs = [example_diag.diag(save_dir=save_dir, force=True) for _ in range(3)]

    assert list(versions(name)) == ["1"]
    expected = {LOGICAL_RUN_KEY: logical_run_key(save_dir), LOCK_DIGEST: lock.digest, MODEL_DIGEST: first_bytes}
    assert identity(versions(name)["1"]) == expected
    client = MlflowClient()
    version = client.get_model_version(name, "1")
    assert version.run_id == runs[0] and version.source.startswith("models:/m-")  # an MLflow 3 LoggedModel
    model_id = version.source.removeprefix("models:/")
    assert identity(client.get_logged_model(model_id).tags) == expected
    for relogged in runs[1:]:  # each relog's run lists the version's model among its outputs
        outputs = client.get_run(relogged).outputs.model_outputs
        assert [output.model_id for output in outputs] == [model_id]
    assert caplog.text.count(f"{name} version 1 already holds this model") == 2

    model = pickle.loads(model_file.read_bytes())
    model.retrained = True  # other bytes for the same save_dir
    model_file.write_bytes(pickle.dumps(model))
    example_diag.diag(save_dir=save_dir, force=True)

    found = versions(name)
    assert sorted(found) == ["1", "2"]
    assert identity(found["1"]) == expected
    assert identity(found["2"]) | {MODEL_DIGEST: None} == expected | {MODEL_DIGEST: None}
    assert found["2"][MODEL_DIGEST] not in (None, first_bytes)
    assert f"registered {name} version 2; the model differs from version(s) 1" in caplog.text


def test_a_registration_says_whether_it_reused_a_version() -> None:
    assert str(Registration("churn", "3", "sha256:ab", reused=True)) == (
        "churn version 3 already holds this model (sha256:ab): reused"
    )
    assert str(Registration("churn", "4", "sha256:cd", reused=False, replaces=("3",))) == (
        "registered churn version 4; the model differs from version(s) 3"
    )
    assert str(Registration("churn", "1", "sha256:ef", reused=False)) == "registered churn version 1"


USER_DIAG = """
import pickle

import mlflow
from flexlock_prefect import diag_flow, storage
from flexlock_prefect.tracking.registration import register_model


@diag_flow(experiment="user-registration")
def diag(save_dir: str, run) -> None:
    model = pickle.loads(storage.read_bytes(storage.join(save_dir, "model.bin")))
    register_model(save_dir, run, MODEL_NAME, "model.bin", lambda: mlflow.sklearn.log_model(model, name="model"))
"""


@pytest.mark.integration
def test_a_users_diag_registers_once_per_model_content_in_one_call(mlflow_server: str, tmp_path: Path) -> None:
    from sklearn.dummy import DummyClassifier

    from flexlock_prefect.capture import capture_run
    from flexlock_prefect.capture.data import hash_data

    name = f"user-reg-{uuid.uuid4().hex[:6]}"
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_diag.py").write_text(USER_DIAG.replace("MODEL_NAME", repr(name)))
    _, lock = capture_run({"save_dir": str(tmp_path / "run")})
    lock.save()
    (tmp_path / "run" / "model.bin").write_bytes(pickle.dumps(DummyClassifier().fit([[0], [1]], [0, 1])))

    def relog() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "flexlock_prefect", "relog", str(tmp_path / "run"), "--force"]
        return subprocess.run(
            [*command, "--diag", "my_diag.py:diag"], cwd=project, capture_output=True, text=True, timeout=300
        )

    assert [relog().returncode, relog().returncode] == [0, 0]
    [version] = versions(name).values()
    model = hash_data(str(tmp_path / "run" / "model.bin"))
    assert identity(version) == {
        LOGICAL_RUN_KEY: logical_run_key(lock.logical_run_id),
        LOCK_DIGEST: lock.digest,
        MODEL_DIGEST: f"{model.algorithm}:{model.digest}",
    }
