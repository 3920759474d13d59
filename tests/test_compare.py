"""`diff_locks`: what differs between the inputs of two runs, section by section: config keys,
code trees (with the changed files when a repository holds both), data digests, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexlock_prefect.capture import capture_run
from flexlock_prefect.compare import Change, diff_locks
from flexlock_prefect.lock import EnvState
from tests.helpers.fakes import ENV, data_state, make_lock, repo_state
from tests.helpers.git_repos import make_repo, write_files

TREE_A = "a" * 40
TREE_B = "b" * 40
UNKNOWN_FILES = ["(changed files unknown: no repository holds both trees)"]


def test_runs_with_the_same_inputs_have_no_differences(tmp_path: Path) -> None:
    config = {"lr": 0.1, "model": {"depth": 3}}
    data = {"input_data": data_state("d1")}
    repos = {"code": repo_state(TREE_A)}
    a = make_lock(tmp_path / "a", config, data=data, repos=repos)
    b = make_lock(tmp_path / "b", config, data=data, repos=repos)
    assert a.created_at <= b.created_at and a.logical_run_id != b.logical_run_id
    assert diff_locks(a, b) == []


def test_the_save_dir_is_never_a_difference(tmp_path: Path) -> None:
    assert diff_locks(make_lock(tmp_path / "a"), make_lock(tmp_path / "b")) == []


def test_a_changed_config_value_is_one_change_with_both_values_as_text(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"lr": 0.1, "optimizer": "adam"})
    b = make_lock(tmp_path / "b", {"lr": 0.2, "optimizer": "adam"})
    assert diff_locks(a, b) == [Change("config", "lr", "0.1", "0.2")]


def test_nested_config_keys_are_named_with_dots(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"model": {"depth": 3, "width": 64}})
    b = make_lock(tmp_path / "b", {"model": {"depth": 4, "width": 64}})
    assert diff_locks(a, b) == [Change("config", "model.depth", "3", "4")]


def test_a_config_key_on_one_side_only_has_none_on_the_other(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"lr": 0.1, "dropout": 0.5})
    b = make_lock(tmp_path / "b", {"lr": 0.1, "momentum": 0.9})
    assert diff_locks(a, b) == [
        Change("config", "dropout", "0.5", None),
        Change("config", "momentum", None, "0.9"),
    ]


def test_config_values_other_than_strings_are_shown_as_json(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"layers": [1, 2], "flag": True, "note": None, "name": "x"})
    b = make_lock(tmp_path / "b", {"layers": [1, 3], "flag": False, "note": "ü", "name": "y"})
    assert diff_locks(a, b) == [
        Change("config", "flag", "true", "false"),
        Change("config", "layers", "[1, 2]", "[1, 3]"),
        Change("config", "name", "x", "y"),
        Change("config", "note", "null", "ü"),
    ]


def test_a_changed_data_digest_shows_algorithm_and_digest(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", data={"input_data": data_state("d1")})
    b = make_lock(tmp_path / "b", data={"input_data": data_state("d2")})
    assert diff_locks(a, b) == [Change("data", "input_data", "xxh3-128-tree:d1", "xxh3-128-tree:d2")]


def test_the_same_bytes_at_another_location_are_no_difference(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", data={"input_data": data_state("d1", uri="file:///mnt/a.csv")})
    b = make_lock(tmp_path / "b", data={"input_data": data_state("d1", uri="s3://bucket/a.csv")})
    assert diff_locks(a, b) == []


def test_a_data_input_on_one_side_only_has_none_on_the_other(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", data={"train": data_state("d1")})
    b = make_lock(tmp_path / "b", data={"train": data_state("d1"), "test": data_state("d9")})
    assert diff_locks(a, b) == [Change("data", "test", None, "xxh3-128-tree:d9")]


def test_a_changed_code_tree_without_a_repository_at_hand_says_the_files_are_unknown(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", repos={"code": repo_state(TREE_A, tmp_path / "gone")})
    b = make_lock(tmp_path / "b", repos={"code": repo_state(TREE_B, tmp_path / "gone")})
    assert diff_locks(a, b) == [Change("code", "code", TREE_A[:12], TREE_B[:12], UNKNOWN_FILES)]


def test_a_repository_on_one_side_only_has_none_on_the_other(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", repos={"code": repo_state(TREE_A)})
    b = make_lock(tmp_path / "b", repos={"code": repo_state(TREE_A), "lib": repo_state(TREE_B)})
    assert diff_locks(a, b) == [Change("code", "lib", None, TREE_B[:12])]
    assert diff_locks(b, a) == [Change("code", "lib", TREE_B[:12], None)]


def test_the_same_tree_is_no_difference_whatever_the_commit_or_branch(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", repos={"code": repo_state(TREE_A, commit="1" * 40, branch="main")})
    b = make_lock(tmp_path / "b", repos={"code": repo_state(TREE_A, commit="2" * 40, branch="dev", dirty=True)})
    assert diff_locks(a, b) == []


def test_changed_code_lists_the_changed_files_when_the_repository_holds_both_trees(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project", {"train.py": "print(1)\n", "old.py": "x\n", ".gitignore": "runs/\n"})

    def run(name: str):
        return capture_run({"save_dir": str(repo / "runs" / name)}, repos={"code": repo})[1]

    a = run("a")
    (repo / "old.py").unlink()
    write_files(repo, {"train.py": "print(2)\n", "new.py": "y\n"})
    b = run("b")
    [change] = diff_locks(a, b)
    assert (change.section, change.name) == ("code", "code")
    assert (change.before, change.after) == (a.repos["code"].tree[:12], b.repos["code"].tree[:12])
    assert sorted(change.details) == ["A new.py", "D old.py", "M train.py"]


def test_python_platform_packages_and_lockfiles_are_environment_differences(tmp_path: Path) -> None:
    newer = EnvState(
        python="3.12.1",
        platform=ENV.platform,
        packages={"numpy": "2.1.0", "torch": "2.4.0"},
        lockfiles={"uv.lock": "l1"},
    )
    a = make_lock(tmp_path / "a")
    b = make_lock(tmp_path / "b", env=newer)
    assert diff_locks(a, b) == [
        Change("env", "python", "3.11.7", "3.12.1"),
        Change("env", "packages.numpy", "2.0.0", "2.1.0"),
        Change("env", "packages.torch", None, "2.4.0"),
        Change("env", "lockfiles.uv.lock", None, "l1"),
    ]


def test_changes_come_config_then_code_then_data_then_env_each_sorted_by_name(tmp_path: Path) -> None:
    a = make_lock(
        tmp_path / "a",
        {"z": 1, "a": 1},
        data={"y": data_state("1"), "b": data_state("1")},
        repos={"code": repo_state(TREE_A)},
    )
    b = make_lock(
        tmp_path / "b",
        {"z": 2, "a": 2},
        data={"y": data_state("2"), "b": data_state("2")},
        repos={"code": repo_state(TREE_B)},
        env=ENV.model_copy(update={"platform": "Darwin-arm64"}),
    )
    assert [(c.section, c.name) for c in diff_locks(a, b)] == [
        ("config", "a"),
        ("config", "z"),
        ("code", "code"),
        ("data", "b"),
        ("data", "y"),
        ("env", "platform"),
    ]


def test_the_diff_from_b_to_a_is_the_diff_from_a_to_b_reversed(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"lr": 0.1}, data={"d": data_state("1")})
    b = make_lock(tmp_path / "b", {"lr": 0.2, "extra": 1}, data={"d": data_state("2")})
    forward = [(c.section, c.name, c.before, c.after) for c in diff_locks(a, b)]
    backward = [(c.section, c.name, c.after, c.before) for c in diff_locks(b, a)]
    assert forward == backward


def test_a_difference_in_fingerprint_inputs_is_always_a_difference(tmp_path: Path) -> None:
    # DESIGN.md §3: equal inputs ⇒ equal fingerprint, so differing fingerprints must show a change.
    a = make_lock(tmp_path / "a", {"lr": 0.1})
    b = make_lock(tmp_path / "b", {"lr": 0.1, "seed": 1})
    assert a.fingerprint != b.fingerprint and diff_locks(a, b) != []


@pytest.mark.parametrize(
    ("before", "after", "texts"),
    [(10, 10.0, ("10", "10.0")), (1, True, ("1", "true"))],
    ids=["int-float", "int-bool"],
)
def test_values_equal_in_python_but_of_another_type_are_a_difference(tmp_path: Path, before, after, texts) -> None:
    a = make_lock(tmp_path / "a", {"epochs": before})
    b = make_lock(tmp_path / "b", {"epochs": after})
    assert a.fingerprint != b.fingerprint
    assert [(c.section, c.name, c.before, c.after) for c in diff_locks(a, b)] == [("config", "epochs", *texts)]


def test_mappings_equal_but_for_key_order_are_no_difference(tmp_path: Path) -> None:
    a = make_lock(tmp_path / "a", {"opt": {"kind": "adam", "betas": [0.9, 0.99]}, "tags": {}})
    b = make_lock(tmp_path / "b", {"tags": {}, "opt": {"betas": [0.9, 0.99], "kind": "adam"}})
    assert a.fingerprint == b.fingerprint and diff_locks(a, b) == []
