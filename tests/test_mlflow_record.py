"""How a run record appears in MLflow (DESIGN.md §5): experiment and run names, the tags a run is
created with, config params (a value too long for a param becomes its digest, never a truncated
value), dataset inputs, and batched logging. All derived from the lock alone, no server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flexlock_prefect.lock import PrefectState, logical_run_key
from flexlock_prefect.tracking.client import BATCH_LIMIT, log_batch
from flexlock_prefect.tracking.record import (
    KEY_LIMIT,
    PARAM_VALUE_LIMIT,
    TAG_VALUE_LIMIT,
    config_params,
    creation_tags,
    dataset_inputs,
    experiment_name,
    mlflow_enabled,
    run_name,
)
from tests.helpers.fakes import FakeMlflowClient, data_state, make_lock, repo_state

# experiment_name, run_name, mlflow_enabled


def test_an_explicit_experiment_name_wins_over_the_config(tmp_path: Path) -> None:
    lock = make_lock(tmp_path / "run", {"mlflow": {"experiment": "from-config"}, "project": "iris"})
    assert experiment_name(lock, "explicit") == "explicit"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"mlflow": {"experiment": "exp"}, "project": "iris"}, "exp"),
        ({"mlflow": {"experiment": ""}, "project": "iris"}, "iris"),
        ({"mlflow": {"run_name": "r"}, "project": "iris"}, "iris"),
        ({"project": "iris"}, "iris"),
        ({"project": 7}, "7"),
        ({"project": {"name": "nested"}}, "Default"),
        ({"mlflow": "not a mapping"}, "Default"),
        ({}, "Default"),
    ],
)
def test_the_experiment_is_mlflow_experiment_else_project_else_default(tmp_path: Path, config, expected) -> None:
    assert experiment_name(make_lock(tmp_path / "run", config)) == expected


def test_an_explicit_run_name_wins_over_the_config(tmp_path: Path) -> None:
    lock = make_lock(tmp_path / "run", {"mlflow": {"run_name": "from-config"}, "model_name": "m"})
    assert run_name(lock, "explicit") == "explicit"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"mlflow": {"run_name": "baseline"}, "model_name": "resnet"}, "baseline"),
        ({"model_name": "resnet"}, "2026-01-02_run · resnet"),
        ({"model_name": "2026-01-02_run"}, "2026-01-02_run"),
        ({}, "2026-01-02_run"),
    ],
)
def test_the_run_name_is_mlflow_run_name_else_the_save_dirs_last_part_then_the_model_name(
    tmp_path: Path, config, expected
) -> None:
    assert run_name(make_lock(tmp_path / "2026-01-02_run", config)) == expected


def test_an_s3_save_dir_names_the_run_after_its_last_part() -> None:
    assert run_name(make_lock("s3://bucket/runs/exp-42/")) == "exp-42"


@pytest.mark.parametrize(
    ("config", "enabled"),
    [
        ({}, True),
        ({"mlflow": {"experiment": "x"}}, True),
        ({"mlflow": {"enabled": True}}, True),
        ({"mlflow": {"enabled": False}}, False),
        ({"mlflow": "off"}, True),
    ],
)
def test_mlflow_is_enabled_unless_the_config_says_mlflow_enabled_false(tmp_path: Path, config, enabled) -> None:
    assert mlflow_enabled(make_lock(tmp_path / "run", config)) is enabled


# creation_tags


def test_a_new_run_carries_the_contract_tags_of_its_record(tmp_path: Path) -> None:
    lock = make_lock(tmp_path / "run", {"lr": 0.1})
    tags = creation_tags(lock, "my-run", "diag-1.2")
    assert tags["flexlock.logical_run_id"] == lock.logical_run_id
    assert tags["flexlock.logical_run_key"] == logical_run_key(lock.logical_run_id)
    assert tags["flexlock.fingerprint"] == lock.fingerprint
    assert tags["flexlock.lock_digest"] == lock.digest
    assert tags["flexlock.diag_version"] == "diag-1.2"
    assert tags["mlflow.runName"] == "my-run"
    assert tags["mlflow.source.type"] == "JOB"


def test_a_new_run_is_created_without_a_status_or_chain_links(tmp_path: Path) -> None:
    # DESIGN.md §5: while a relog is being logged nobody may take it for the current view.
    tags = creation_tags(make_lock(tmp_path / "run"), "r", "1")
    assert not {"flexlock.status", "flexlock.supersedes_run_id", "flexlock.superseded_by_run_id"} & tags.keys()


def test_empty_values_make_no_tag(tmp_path: Path) -> None:
    repos = {"code": repo_state("a" * 40, commit=None, remote=None)}
    tags = creation_tags(make_lock(tmp_path / "run", repos=repos), "r", "")
    assert "flexlock.diag_version" not in tags
    assert "mlflow.source.git.commit" not in tags and "mlflow.source.git.repoURL" not in tags
    assert tags["mlflow.source.git.branch"] == "main"
    assert all(tags.values())


def test_the_source_name_is_the_flow_name_when_captured_in_a_flow(tmp_path: Path) -> None:
    prefect = PrefectState(flow_run_id="fr-1", flow_name="train", deployment_name="train/prod", parameters={})
    assert creation_tags(make_lock(tmp_path / "a", prefect=prefect), "r", "")["mlflow.source.name"] == "train"
    assert creation_tags(make_lock(tmp_path / "b"), "r", "")["mlflow.source.name"] == "flexlock-prefect"


def test_the_source_name_shows_the_short_commit_of_the_code_and_whether_it_was_dirty(tmp_path: Path) -> None:
    prefect = PrefectState(flow_run_id="fr-1", flow_name="train", deployment_name="train/prod", parameters={})
    clean = {"code": repo_state("a" * 40, commit="89dc28d" + "0" * 33)}
    dirty = {"code": repo_state("a" * 40, commit="89dc28d" + "0" * 33, dirty=True, snapshot_ref="refs/x")}
    assert (
        creation_tags(make_lock(tmp_path / "a", prefect=prefect, repos=clean), "r", "")["mlflow.source.name"]
        == "train @ 89dc28d"
    )
    assert (
        creation_tags(make_lock(tmp_path / "b", repos=dirty), "r", "")["mlflow.source.name"]
        == "flexlock-prefect @ 89dc28d+dirty"
    )


def test_git_tags_come_from_the_repo_named_code_else_the_first_repo(tmp_path: Path) -> None:
    lib = repo_state("1" * 40, commit="1" * 40, branch="lib-branch", remote="https://example.invalid/lib.git")
    code = repo_state("2" * 40, commit="2" * 40, branch="code-branch", remote="https://example.invalid/code.git")
    with_code = creation_tags(make_lock(tmp_path / "a", repos={"lib": lib, "code": code}), "r", "")
    assert (with_code["mlflow.source.git.commit"], with_code["mlflow.source.git.branch"]) == ("2" * 40, "code-branch")
    assert with_code["mlflow.source.git.repoURL"] == "https://example.invalid/code.git"
    only_lib = creation_tags(make_lock(tmp_path / "b", repos={"lib": lib}), "r", "")
    assert only_lib["mlflow.source.git.commit"] == "1" * 40
    assert not any(k.startswith("mlflow.source.git") for k in creation_tags(make_lock(tmp_path / "c"), "r", ""))


def test_the_note_names_the_run_its_fingerprint_and_each_code_state(tmp_path: Path) -> None:
    repos = {
        "code": repo_state("a" * 40, commit="c" * 40),
        "lib": repo_state("b" * 40, commit=None, dirty=True, snapshot_ref="refs/flexlock/snapshots/x"),
    }
    lock = make_lock(tmp_path / "run", repos=repos)
    assert creation_tags(lock, "r", "")["mlflow.note.content"].splitlines() == [
        f"**flexlock run** `{lock.logical_run_id}`",
        "",
        f"- fingerprint `{lock.fingerprint}`",
        f"- repository `code` at `{'c' * 40}` (clean)",
        "- repository `lib` at `no commit` (dirty, snapshot `refs/flexlock/snapshots/x`)",
    ]


def test_seed_tags_come_from_the_config_and_other_keys_do_not(tmp_path: Path) -> None:
    config = {
        "project": "iris",
        "env": "prod",
        "model_name": "resnet",
        "data_name": "iris-v2",
        "debug": False,
        "lifecycle_intent": "candidate",
        "lr": 0.1,
    }
    tags = creation_tags(make_lock(tmp_path / "run", config), "r", "")
    assert {k: tags[k] for k in config if k in tags} == {
        "project": "iris",
        "env": "prod",
        "model_name": "resnet",
        "data_name": "iris-v2",
        "debug": "false",
        "lifecycle_intent": "candidate",
    }


def test_seed_keys_missing_empty_or_nested_in_the_config_make_no_tag(tmp_path: Path) -> None:
    tags = creation_tags(make_lock(tmp_path / "run", {"project": "", "env": {"name": "prod"}, "debug": None}), "r", "")
    assert not {"project", "env", "model_name", "data_name", "debug", "lifecycle_intent"} & tags.keys()


def test_a_tag_longer_than_mlflow_allows_is_cut_to_the_limit(tmp_path: Path) -> None:
    tags = creation_tags(make_lock(tmp_path / "run", {"project": "p" * (TAG_VALUE_LIMIT + 500)}), "r", "")
    assert tags["project"] == "p" * TAG_VALUE_LIMIT


# config_params


def test_the_config_is_logged_flattened_with_dotted_keys_and_json_values(tmp_path: Path) -> None:
    config = {"lr": 0.1, "model": {"depth": 3, "act": "relu"}, "layers": [1, 2], "flag": True, "none": None, "e": {}}
    lock = make_lock(tmp_path / "run", config)
    params, tags = config_params(lock)
    assert params == {
        "save_dir": str(tmp_path / "run"),
        "lr": "0.1",
        "model.depth": "3",
        "model.act": "relu",
        "layers": "[1, 2]",
        "flag": "true",
        "none": "null",
        "e": "{}",
    }
    assert tags == {}


def test_characters_mlflow_refuses_in_a_key_become_underscores(tmp_path: Path) -> None:
    params, _ = config_params(make_lock(tmp_path / "run", {"a:b": 1, "w@e!rd key": 2, "ok-_. /": 3}))
    assert {k: v for k, v in params.items() if k != "save_dir"} == {"a_b": "1", "w_e_rd key": "2", "ok-_. /": "3"}


def test_a_key_longer_than_mlflow_allows_is_cut_to_the_limit(tmp_path: Path) -> None:
    params, _ = config_params(make_lock(tmp_path / "run", {"k" * (KEY_LIMIT + 10): 1}))
    assert "k" * KEY_LIMIT in params


def test_a_value_at_the_param_limit_is_logged_as_it_is(tmp_path: Path) -> None:
    params, tags = config_params(make_lock(tmp_path / "run", {"prompt": "x" * PARAM_VALUE_LIMIT}))
    assert params["prompt"] == "x" * PARAM_VALUE_LIMIT and tags == {}


def test_a_value_longer_than_a_param_is_its_digest_with_a_tag_saying_where_the_value_is(tmp_path: Path) -> None:
    value = "y" * (PARAM_VALUE_LIMIT + 1)
    params, tags = config_params(make_lock(tmp_path / "run", {"model": {"prompt": value}}))
    assert params["model.prompt"] == "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    assert tags == {"flexlock.long_param.model.prompt": "full value in artifact run.lock, key config.model.prompt"}


def test_a_long_list_is_digested_from_its_json_text(tmp_path: Path) -> None:
    value = list(range(3000))
    params, tags = config_params(make_lock(tmp_path / "run", {"ids": value}))
    assert params["ids"] == "sha256:" + hashlib.sha256(json.dumps(value).encode()).hexdigest()
    assert list(tags) == ["flexlock.long_param.ids"]


def test_the_tag_of_a_long_value_with_a_long_key_stays_within_the_key_limit(tmp_path: Path) -> None:
    _, tags = config_params(make_lock(tmp_path / "run", {"k" * KEY_LIMIT: "v" * (PARAM_VALUE_LIMIT + 1)}))
    [key] = tags
    assert len(key) == KEY_LIMIT and key.startswith("flexlock.long_param.kkk")


# dataset_inputs


def test_each_data_input_is_one_dataset_named_after_its_config_key(tmp_path: Path) -> None:
    data = {
        "train": data_state("a" * 32, uri="file:///data/train"),
        "test": data_state("b" * 64, uri="s3://bucket/test.csv", algorithm="sha256"),
    }
    inputs = dataset_inputs(make_lock(tmp_path / "run", data=data))
    assert [i.dataset.name for i in inputs] == ["train", "test"]
    assert [i.dataset.source_type for i in inputs] == ["local", "s3"]
    assert [json.loads(i.dataset.source) for i in inputs] == [
        {"uri": "file:///data/train"},
        {"uri": "s3://bucket/test.csv"},
    ]


def test_a_dataset_digest_holds_at_most_36_characters_and_the_full_digest_is_an_input_tag(tmp_path: Path) -> None:
    data = {"short": data_state("a" * 32), "long": data_state("b" * 64, algorithm="sha256")}
    inputs = dataset_inputs(make_lock(tmp_path / "run", data=data))
    assert [i.dataset.digest for i in inputs] == ["a" * 32, "b" * 36]
    assert all(len(i.dataset.digest) <= 36 for i in inputs)
    assert [{t.key: t.value for t in i.tags} for i in inputs] == [
        {"mlflow.data.context": "input", "flexlock.digest": f"xxh3-128-tree:{'a' * 32}"},
        {"mlflow.data.context": "input", "flexlock.digest": f"sha256:{'b' * 64}"},
    ]


def test_a_run_without_data_has_no_dataset_inputs(tmp_path: Path) -> None:
    assert dataset_inputs(make_lock(tmp_path / "run")) == []


# log_batch


def test_params_and_tags_go_in_batches_of_at_most_the_batch_limit() -> None:
    client = FakeMlflowClient()
    client.add_run("r")
    params = {f"p{i}": str(i) for i in range(2 * BATCH_LIMIT + 50)}
    tags = {f"t{i}": str(i) for i in range(30)}
    log_batch(client, "r", params=params, tags=tags)
    sizes = [(len(body["params"]), len(body["tags"])) for _, _, body in client.requests]
    assert sizes == [(BATCH_LIMIT, 30), (BATCH_LIMIT, 0), (50, 0)]
    assert client.run("r").data.params == params and client.tags("r") == tags


def test_nothing_to_log_makes_no_request() -> None:
    client = FakeMlflowClient()
    client.add_run("r")
    log_batch(client, "r")
    log_batch(client, "r", params={}, tags={})
    assert client.requests == []
