"""A sweep's keys and search spaces, without Prefect: what changes a key and what does not."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from flexlock_prefect import metrics
from flexlock_prefect import study as study_module
from flexlock_prefect.capture import capture_run
from flexlock_prefect.exceptions import ConfigError, SweepError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.study import (
    Space,
    Study,
    TrialPlanner,
    check_overrides,
    parse_distribution_option,
    parse_grid_option,
    plan_study,
    trial_partial,
)
from tests.helpers.git_repos import make_repo, write_files

CONFIG = {"lr": 0.1, "seed": 0, "model": {"depth": 2, "act": "relu"}, "input_data": "???", "save_dir": "???"}
DISTRIBUTIONS = {
    "lr": ("loguniform", 1e-4, 1e-1),
    "model.depth": ("int", 2, 8),
    "model.act": ("choice", ["relu", "tanh"]),
    "seed": ("uniform", 0, 0.5),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", {"train.py": "print('v1')\n", "data.csv": "x,y\n1,2\n"})


def plan(project: Path, root: Path | None = None, **space: object) -> Study:
    """The study of `space` over CONFIG, captured as a locked flow with that repo and data would."""

    def capture(partial: dict) -> RunLock:
        overrides = [f"input_data={project / 'data.csv'}"]
        return capture_run(CONFIG, overrides=overrides, partial=partial, data=["input_data"], repos={"code": project})[
            1
        ]

    return plan_study(Space.of(**space), TrialPlanner.of(str(root or project.parent / "sweep"), capture))


def keys(study: Study) -> dict[str, str]:
    """Trial key by the trial's values."""
    return {repr(sorted(t.values.items())): t.key for t in study.trials}


def test_a_grid_has_one_trial_per_combination_named_by_its_key_under_the_root(project: Path) -> None:
    study = plan(project, grid={"lr": [0.1, 0.01], "seed": [0, 1]})
    assert [t.values for t in study.trials] == [
        {"lr": 0.1, "seed": 0},
        {"lr": 0.1, "seed": 1},
        {"lr": 0.01, "seed": 0},
        {"lr": 0.01, "seed": 1},
    ]
    root = (project.parent / "sweep").as_uri()
    assert [t.save_dir for t in study.trials] == [f"{root}/trial-{t.key[:16]}" for t in study.trials]
    assert all(len(t.key) == 64 for t in study.trials) and len(study.key) == 64


def test_the_trial_key_is_the_fingerprint_its_run_will_record(project: Path) -> None:
    [trial] = plan(project, points=[{"lr": 0.5}]).trials
    overrides = [f"input_data={project / 'data.csv'}"]
    _, lock = capture_run(
        CONFIG,
        overrides=overrides,
        partial=trial_partial(trial.point, trial.save_dir),
        data=["input_data"],
        repos={"code": project},
    )
    assert lock.fingerprint == trial.key and lock.logical_run_id == trial.save_dir


def test_growing_the_grid_keeps_every_trial_key_and_changes_only_the_study_key(project: Path) -> None:
    small = plan(project, grid={"lr": [0.1, 0.01], "seed": [0, 1]})
    grown = plan(project, grid={"lr": [0.1, 0.01, 0.001], "seed": [0, 1]})
    assert keys(grown).items() >= keys(small).items()
    assert len(grown.trials) == 6 and grown.key != small.key


def test_changing_one_grid_value_changes_the_study_key_and_only_that_values_trials(project: Path) -> None:
    before = plan(project, grid={"lr": [0.1, 0.01], "seed": [0, 1]})
    after = plan(project, grid={"lr": [0.1, 0.02], "seed": [0, 1]})
    assert after.key != before.key
    assert set(keys(before).values()) & set(keys(after).values()) == {k for v, k in keys(before).items() if "0.1)" in v}


def test_the_order_of_grid_keys_and_values_changes_no_key(project: Path) -> None:
    one = plan(project, grid={"lr": [0.1, 0.01], "seed": [0, 1]})
    other = plan(project, grid={"seed": [1, 0], "lr": [0.01, 0.1]})
    assert other.key == one.key and keys(other) == keys(one)


def test_keys_are_the_same_under_another_root_and_on_another_planning(project: Path, tmp_path: Path) -> None:
    here = plan(project, grid={"lr": [0.1, 0.01]})
    elsewhere = plan(project, tmp_path / "elsewhere", grid={"lr": [0.1, 0.01]})
    assert elsewhere.key == here.key and keys(elsewhere) == keys(here)
    assert elsewhere.trials[0].save_dir.startswith(f"file://{tmp_path}/elsewhere/trial-")


def test_code_and_data_are_in_both_keys(project: Path) -> None:
    before = plan(project, grid={"lr": [0.1, 0.01]})
    write_files(project, {"train.py": "print('v2')\n"})
    code_changed = plan(project, grid={"lr": [0.1, 0.01]})
    write_files(project, {"data.csv": "x,y\n1,3\n"})
    data_changed = plan(project, grid={"lr": [0.1, 0.01]})
    assert len({before.key, code_changed.key, data_changed.key}) == 3
    assert not set(keys(before).values()) & set(keys(code_changed).values())
    assert not set(keys(code_changed).values()) & set(keys(data_changed).values())


def test_the_study_base_is_the_fingerprint_inputs_less_the_swept_keys(project: Path) -> None:
    study = plan(project, grid={"lr": [0.1, 0.01], "model.depth": [2, 3]})
    assert study.base["config"] == {"seed": 0, "model": {"act": "relu"}, "input_data": str(project / "data.csv")}
    assert set(study.base) == {"config", "repos", "data", "lockfiles"} and set(study.base["data"]) == {"input_data"}
    assert study.space == {"grid": {"lr": [0.01, 0.1], "model.depth": [2, 3]}}


def test_points_with_identical_inputs_are_one_trial(project: Path) -> None:
    study = plan(project, points=[{"seed": 1}, {"seed": 2}, {"seed": 1}])
    assert [t.values for t in study.trials] == [{"seed": 1}, {"seed": 2}]


def test_random_draws_are_fixed_by_the_seed_and_stay_in_their_distributions() -> None:
    space = Space.of(distributions=DISTRIBUTIONS, n=3, seed=42)
    assert space.points() == [
        {"lr": 0.008284768841, "model.act": "relu", "model.depth": 3, "seed": 0.1116053691},
        {"lr": 0.01619621907, "model.act": "tanh", "model.depth": 8, "seed": 0.04346941631},
        {"lr": 0.001844019287, "model.act": "relu", "model.depth": 3, "seed": 0.2526776441},
    ]
    assert Space.of(distributions=dict(reversed(DISTRIBUTIONS.items())), n=3, seed=42).points() == space.points()
    many = Space.of(distributions=DISTRIBUTIONS, n=200, seed=7).points()
    assert many != Space.of(distributions=DISTRIBUTIONS, n=200, seed=8).points()
    assert all(1e-4 <= p["lr"] <= 1e-1 and 0 <= p["seed"] <= 0.5 for p in many)
    assert {p["model.depth"] for p in many} == set(range(2, 9)) and {p["model.act"] for p in many} == {"relu", "tanh"}


def test_the_random_space_is_keyed_by_its_distributions_n_and_seed(project: Path) -> None:
    study = plan(project, distributions={"lr": ("uniform", 0.1, 0.2)}, n=2, seed=3)
    assert study.space == {"distributions": {"lr": ["uniform", 0.1, 0.2]}, "n": 2, "seed": 3}
    assert plan(project, distributions={"lr": ("uniform", 0.1, 0.2)}, n=2, seed=4).key != study.key


def test_a_space_asked_of_a_sampler_is_keyed_by_its_distributions_alone(project: Path) -> None:
    """The sampler, its seed and its number of trials say how the study is searched, not what it is."""
    study = plan(project, distributions=DISTRIBUTIONS, asked_by="optuna")
    assert study.trials == ()
    assert study.space == {
        "distributions": {
            "lr": ["loguniform", 1e-4, 1e-1],
            "model.act": ["choice", ["relu", "tanh"]],
            "model.depth": ["int", 2, 8],
            "seed": ["uniform", 0, 0.5],
        },
        "asked_by": "optuna",
    }
    assert plan(project, distributions=DISTRIBUTIONS, asked_by="optuna", seed=9, n=50).key == study.key
    assert plan(project, distributions=DISTRIBUTIONS, n=5).key != study.key


def test_an_asked_spaces_base_is_captured_at_its_low_ends(project: Path) -> None:
    space = Space.of(distributions=DISTRIBUTIONS, asked_by="optuna")
    assert space.base_point() == {"lr": 1e-4, "model.act": "relu", "model.depth": 2, "seed": 0}
    with pytest.raises(SweepError, match="asked of optuna one by one"):
        space.points()
    swept = plan(project, distributions=DISTRIBUTIONS, asked_by="optuna")
    assert swept.base == plan(project, points=[{k: 0.5 for k in DISTRIBUTIONS}]).base  # no swept key in it


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ({"grid": {"lr": []}}, "the grid values of 'lr' must be a non-empty list"),
        ({"grid": {"lr": "0.1"}}, "the grid values of 'lr' must be a non-empty list"),
        ({"grid": {"save_dir": ["a"]}}, "cannot sweep 'save_dir'"),
        ({"grid": {"model": [{}], "model.depth": [1]}}, "the swept keys 'model' and the keys below it overlap"),
        ({"points": []}, "points must be a non-empty list"),
        ({"distributions": {"lr": ("gauss", 0, 1)}, "n": 2}, "write (uniform|loguniform|int, low, high)"),
        ({"distributions": {"lr": ("loguniform", 0, 1)}, "n": 2}, "needs low > 0"),
        ({"distributions": {"d": ("int", 1.5, 3)}, "n": 2}, "needs numbers low <= high"),
        ({"distributions": {"a": ("choice", [])}, "n": 2}, "needs a non-empty list of options"),
        ({"distributions": {"lr": ("uniform", 0, 1)}}, "random draws need distributions and n >= 1"),
        ({"grid": {"lr": [1]}, "points": [{"lr": 1}]}, "give exactly one search space"),
        ({"grid": {"lr": [1]}, "asked_by": "optuna"}, "points asked of optuna need distributions"),
    ],
)
def test_a_bad_space_is_one_clear_error(space: dict, says: str) -> None:
    with pytest.raises(SweepError, match=says.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        Space.of(**space)


def test_a_point_the_config_refuses_is_named_in_the_error(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"the sweep's point \{'lrr': 1\} does not fit the config.*did you mean 'lr'"):
        plan(project, grid={"lrr": [1]})


def test_an_override_of_a_swept_key_is_refused() -> None:
    with pytest.raises(SweepError, match="the override 'model.depth=3' sets the swept key 'model.depth'"):
        check_overrides(Space.of(grid={"model.depth": [1, 2]}), ["lr=0.1", "model.depth=3"])
    check_overrides(Space.of(grid={"model.depth": [1, 2]}), ["model.act=tanh"])


def test_a_swept_secret_is_recorded_redacted(project: Path) -> None:
    study = plan(project, points=[{"lr": 0.2, "model.act": "sk-" + "a" * 24}])
    [trial] = study.trials
    assert trial.values == {"lr": 0.2, "model.act": "<redacted>"} and trial.point["model.act"].startswith("sk-")
    assert "sk-" not in repr(study.space)


def test_cli_options_read_values_as_overrides_do() -> None:
    assert parse_grid_option("model.C=0.1,1,1e-3,relu,null") == ("model.C", [0.1, 1, 0.001, "relu", None])
    assert parse_distribution_option("lr=loguniform:1e-4:0.1") == ("lr", ["loguniform", 0.0001, 0.1])
    assert parse_distribution_option("act=choice:relu,tanh") == ("act", ["choice", ["relu", "tanh"]])
    for bad in ("model.C", "model.C=", "model.C=1,,2", "=1"):
        with pytest.raises(SweepError, match="write KEY=V1,V2"):
            parse_grid_option(bad)
    with pytest.raises(SweepError, match="write KEY=uniform:LOW:HIGH"):
        parse_distribution_option("lr=normal:0:1")


def test_the_docstring_examples_hold() -> None:
    for module in (study_module, metrics):
        results = doctest.testmod(module)
        assert results.attempted > 0 and results.failed == 0, module.__name__
