"""Every operational knob is a field of `FlexlockSettings`, with a description and bounds.

The table below is the specification: a new knob, a changed default or bound shows up here.
Constants left in modules are limits of the formats and APIs flexlock speaks, or algorithm
parameters whose change would change digests; each is listed with the reason it is no knob.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from annotated_types import Ge, Gt, Le, MinLen
from pydantic import ValidationError

from flexlock_prefect.exceptions import SettingsError
from flexlock_prefect.settings import FlexlockSettings, get_settings

PACKAGE = Path(__file__).resolve().parents[1] / "flexlock_prefect"

FIELDS: dict[str, dict[str, object]] = {
    "cache_dir": {},
    "stat_cache": {},
    "hash_algorithm": {},
    "hash_workers": {"ge": 1, "le": 64},
    "progress_min_bytes": {"ge": 0},
    "secret_key_words": {},
    "secret_value_patterns": {},
    "git_optional": {},
    "relog_workers": {"ge": 1, "le": 64},
    "reconcile_stale_after_s": {"gt": 0},
    "tracking_health_attempts": {"ge": 1, "le": 10},
    "tracking_retries": {"ge": 0, "le": 10},
    "tracking_healthy_for_s": {"ge": 0},
    "artifact_suffixes": {"min_length": 1},
    "max_artifact_bytes": {"ge": 0},
    "lock_timeout_s": {"gt": 0},
    "lock_lease_s": {"ge": 5},
    "api_poll_s": {"gt": 0, "le": 30},
    "approve_wait_s": {"ge": 0},
    "approval_timeout_s": {"ge": 1},
    "approval_poll_interval_s": {"ge": 1, "le": 600},
    "demo_timeout_s": {"gt": 0},
    "mlflow_credentials_block": {"min_length": 1},
    "sweep_max_parallel": {"ge": 1, "le": 64},
}

NOT_KNOBS = {
    "artifacts.py:PROGRESS_INTERVAL_S": "a rate limit of progress updates to the Prefect API, not a behaviour",
    "concurrency.py:PREFECT_MIN_LEASE_S": "Prefect's API refuses shorter leases",
    "capture/data.py:SMALL_FILE_LIMIT": "how files are read; the digest is the same either way",
    "capture/data.py:RACY_WINDOW_NS": "file timestamps' granularity: a correctness bound of the stat cache",
    "capture/git.py:_MAX_SKIPPED_NESTED_REPOS": "a bound on a loop over git's errors",
    "capture/hashing.py:BLOCK_SIZE": "part of the xxh3-128-tree digest: changing it changes every digest",
    "capture/hashing.py:CHUNK_SIZE": "how blocks are read; the digest is the same either way",
    "capture/lineage.py:MAX_DEPTH": "how far up an input's path a save_dir is looked for",
    "capture/statcache.py:_BATCH": "SQLite's limit of variables per statement",
    "lock.py:SCHEMA_VERSION": "the run.lock format",
    "optuna_trials.py:REPEATS_IN_A_ROW": "when a sampler's space counts as exhausted, a bound on a loop",
    "provenance.py:CONFIG_HIGHLIGHTS": "how many config values a trace shows; the run.lock (`show`) has them all",
    "report.py:MAX_NAMED": "how many failed items a one-line message names; the outcome table names them all",
    "trace_view.py:SHORT": "how much of a hash a flowchart node shows; the trace has them whole",
    "tracking/outcomes.py:MAX_REASON": "keeps a failed item's reason to one table cell, not a behaviour",
    "tracking/client.py:BATCH_LIMIT": "MLflow's limit of params or tags per request",
    "tracking/outputs.py:METRIC_BATCH": "MLflow's limit of metrics per request",
    "tracking/record.py:PARAM_VALUE_LIMIT": "MLflow's limit",
    "tracking/record.py:TAG_VALUE_LIMIT": "MLflow's limit",
    "tracking/record.py:KEY_LIMIT": "MLflow's limit",
    "tracking/record.py:DATASET_DIGEST_LIMIT": "MLflow's limit",
    "sweeplock.py:SWEEP_SCHEMA_VERSION": "the sweep.lock format",
    "tracking/lifecycle.py:LIFECYCLE_ROWS": "how much of the history a version's description shows; the tag has it all",
}


def bounds(name: str) -> dict[str, object]:
    kinds = {Ge: "ge", Gt: "gt", Le: "le", MinLen: "min_length"}
    found = {}
    for item in FlexlockSettings.model_fields[name].metadata:
        kind = kinds[type(item)]
        found[kind] = getattr(item, kind)
    return found


def test_the_settings_are_exactly_the_listed_fields_with_their_bounds() -> None:
    assert list(FlexlockSettings.model_fields) == list(FIELDS)
    assert {name: bounds(name) for name in FIELDS} == FIELDS


def test_every_setting_says_what_it_does() -> None:
    for name, field in FlexlockSettings.model_fields.items():
        assert field.description and len(field.description) > 20, name


def test_settings_come_from_flexlock_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXLOCK_RELOG_WORKERS", "8")
    monkeypatch.setenv("FLEXLOCK_ARTIFACT_SUFFIXES", '[".png"]')
    settings = get_settings()
    assert settings.relog_workers == 8 and settings.artifact_suffixes == [".png"]


def test_settings_follow_each_change_of_the_environment_and_are_built_once_per_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEXLOCK_RELOG_WORKERS", "3")
    settings = get_settings()
    assert get_settings() is settings and settings.relog_workers == 3
    monkeypatch.setenv("FLEXLOCK_RELOG_WORKERS", "5")
    assert get_settings().relog_workers == 5
    monkeypatch.delenv("FLEXLOCK_RELOG_WORKERS")
    assert get_settings().relog_workers == FlexlockSettings.model_fields["relog_workers"].default
    monkeypatch.delenv("FLEXLOCK_CACHE_DIR")  # each test's own, from conftest
    monkeypatch.setenv("XDG_CACHE_HOME", "/elsewhere")  # read by the cache directory's default
    assert get_settings().cache_dir == Path("/elsewhere/flexlock-prefect")
    with pytest.raises(ValidationError, match="frozen"):  # one instance is shared: nobody may change it
        settings.relog_workers = 1


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FLEXLOCK_RELOG_WORKERS", "0", "FLEXLOCK_RELOG_WORKERS: Input should be greater than or equal to 1"),
        ("FLEXLOCK_LOCK_LEASE_S", "1", "FLEXLOCK_LOCK_LEASE_S: Input should be greater than or equal to 5"),
        ("FLEXLOCK_APPROVAL_TIMEOUT_S", "soon", "FLEXLOCK_APPROVAL_TIMEOUT_S: Input should be a valid integer"),
    ],
)
def test_a_value_out_of_bounds_is_one_clear_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=says) as raised:
        get_settings()
    assert "\n" not in str(raised.value)


def module_constants() -> set[str]:
    """`module:NAME` of every upper-case module-level number outside settings.py."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not all(isinstance(n, ast.Constant | ast.BinOp | ast.operator) for n in ast.walk(node.value)):
                continue
            value = eval(compile(ast.Expression(node.value), str(path), "eval"))  # numbers and operators only
            if isinstance(value, int | float) and not isinstance(value, bool):
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.lstrip("_").isupper():
                        found.add(f"{path.relative_to(PACKAGE).as_posix()}:{target.id}")
    return found


def test_no_operational_constant_lives_outside_settings() -> None:
    assert module_constants() == set(NOT_KNOBS)
