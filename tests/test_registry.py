"""The registry lifecycle against a real MLflow server and Model Registry (DESIGN.md §6)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

import pytest
from mlflow import MlflowClient

from flexlock_prefect.concurrency import exclusive
from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.registry import APPROVED_BY, LIFECYCLE, history, move, resolve

pytestmark = pytest.mark.integration


@pytest.fixture
def model(mlflow_server: str) -> str:
    """A registered model with versions 1, 2 and 3, all new."""
    client = MlflowClient()
    name = f"clf-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(name)
    for _ in range(3):
        run = client.create_run(experiment)
        client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return name


def snapshot(name: str) -> tuple[dict, dict]:
    """Aliases and every version's tags: what a refused move must leave exactly as it was."""
    client = MlflowClient()
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{name}'")}
    return dict(client.get_registered_model(name).aliases), versions


def states(name: str) -> dict[str, str | None]:
    return {version: tags.get(LIFECYCLE) for version, tags in snapshot(name)[1].items()}


def test_a_version_walks_new_dev_staging_prod_with_aliases_tags_and_history(model: str) -> None:
    move(model, "1", "dev", by="ana")
    move(model, "1", "staging", by="ana", comment="good offline metrics")
    [promotion] = move(model, "1", "prod", by="bo", comment="approved", approved=True, flow_run_id="fr-1")

    aliases, versions = snapshot(model)
    assert aliases == {"prod": "1"}  # each state's alias left with the version
    assert versions["1"][LIFECYCLE] == "prod" and versions["1"][APPROVED_BY] == "bo"
    assert (promotion.from_state, promotion.to_state, promotion.flow_run_id) == ("staging", "prod", "fr-1")
    assert [(m.from_state, m.to_state, m.by) for m in history(model)] == [
        (None, "dev", "ana"),
        ("dev", "staging", "ana"),
        ("staging", "prod", "bo"),
    ]
    assert resolve(model, "prod").version == "1"


def test_promoting_a_second_version_to_prod_archives_the_first(model: str) -> None:
    for version in ("1", "2"):
        for state in ("dev", "staging", "prod"):
            move(model, version, state, by="ana")

    aliases, _ = snapshot(model)
    assert aliases == {"prod": "2", "archived": "1"}
    assert states(model) == {"1": "archived", "2": "prod", "3": None}
    archived = [m for m in history(model) if m.version == "1" and m.to_state == "archived"]
    assert archived[0].comment == "replaced in prod by version 2"


def test_an_alias_names_the_version_that_entered_its_state_last(model: str) -> None:
    move(model, "1", "dev", by="ana")
    move(model, "2", "dev", by="ana")
    move(model, "2", "staging", by="ana")
    assert snapshot(model)[0] == {"staging": "2"}  # v2 took the dev alias with it...
    assert states(model)["1"] == "dev"  # ...while v1 stays in dev: no alias names a version in another state


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ([("1", "dev")], ("1", "prod"), "version 1 is dev: it may move to staging, archived, not to prod"),
        ([("1", "archived")], ("1", "prod"), "version 1 is archived: it may move to nothing"),
        ([], ("1", "staging"), "version 1 is new: it may move to dev, archived"),
        ([], ("1", "production"), "unknown lifecycle state 'production'"),
        ([], ("9", "dev"), "has no version 9"),
    ],
)
def test_illegal_moves_are_refused_and_change_nothing(model: str, setup, args, message: str) -> None:
    for version, state in setup:
        move(model, version, state, by="ana")
    before = snapshot(model)
    with pytest.raises(LifecycleError, match=message):
        move(model, *args, by="mallory")
    assert snapshot(model) == before


def test_an_unknown_model_is_refused(mlflow_server: str) -> None:
    with pytest.raises(LifecycleError, match="no registered model named 'nope'"):
        move("nope", "1", "dev", by="ana")
    with pytest.raises(LifecycleError, match="no registered model named 'nope'"):
        history("nope")


def test_concurrent_promotions_to_prod_end_with_one_holder(model: str, prefect_api: str) -> None:
    for version in ("1", "2", "3"):
        move(model, version, "dev", by="ana")
        move(model, version, "staging", by="ana")

    def promote(version: str) -> None:
        move(model, version, "prod", by="ana", serialize=lambda name: exclusive(f"flexlock-model-{name}"))

    with ThreadPoolExecutor(3) as pool:  # each thread in a copy of this context: the test's Prefect API
        futures = [pool.submit(copy_context().run, promote, version) for version in ("1", "2", "3")]
        [future.result() for future in futures]

    aliases, versions = snapshot(model)
    in_prod = [v for v, tags in versions.items() if tags[LIFECYCLE] == "prod"]
    assert in_prod == [aliases["prod"]]
    assert sorted(tags[LIFECYCLE] for tags in versions.values()) == ["archived", "archived", "prod"]
