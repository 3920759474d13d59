"""The registry lifecycle against a real MLflow server and Model Registry (DESIGN.md §6)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from contextvars import copy_context
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils import rest_utils

from flexlock_prefect.concurrency import exclusive
from flexlock_prefect.exceptions import LifecycleError, TrackingError
from flexlock_prefect.registry import APPROVED_BY, HISTORY, LIFECYCLE, alias_holder, check_move, history, move, resolve
from tests.helpers.models import registered_model
from tests.helpers.servers import AuthApp, as_user, grant, start_mlflow_server

pytestmark = pytest.mark.integration


@pytest.fixture
def model(mlflow_server: str) -> str:
    """A registered model with versions 1, 2 and 3, all new."""
    return registered_model("clf")


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


def test_a_versions_description_keeps_the_users_text_and_shows_its_lifecycle_newest_first(model: str) -> None:
    MlflowClient().update_model_version(model, "1", description="Trained on the May data.")
    move(model, "1", "dev", by="ana")
    move(model, "1", "staging", by="bo", comment="good | offline\nmetrics")
    description = MlflowClient().get_model_version(model, "1").description
    own, table = description.split("#### Lifecycle (flexlock)")
    assert own == "Trained on the May data.\n\n"
    rows = [line.split(" | ")[1:] for line in table.strip().splitlines()[2:]]
    assert rows == [["dev → staging", "bo", "good \\| offline metrics |"], ["new → dev", "ana", " |"]]


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
    move(model, "3", "archived", by="ana")
    assert snapshot(model)[0] == {"staging": "2", "archived": "3"}  # and the next move does not hand dev to v1


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


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every MLflow REST request from now on, as (method, endpoint after /mlflow/)."""
    made: list[tuple[str, str]] = []
    sent = rest_utils.http_request

    def counted(host_creds, endpoint: str, method: str, *args, **kwargs):
        made.append((method, endpoint.rsplit("/mlflow/", 1)[-1]))
        return sent(host_creds, endpoint, method, *args, **kwargs)

    monkeypatch.setattr(rest_utils, "http_request", counted)
    return made


WRITES = {
    "POST model-versions/set-tag",
    "POST registered-models/alias",
    "DELETE registered-models/alias",
    "PATCH model-versions/update",  # the lifecycle table in the description
}


@pytest.mark.parametrize("serialized", [False, True])
@pytest.mark.parametrize(
    ("version", "to", "at_most"),
    # each 13, 20, 31 when it read as it went; 2 more per version moved for the description, 1 more
    # for asking the auth app (absent here) what the account may do when the move deletes an alias
    [("1", "dev", 11), ("1", "staging", 18), ("1", "prod", 26)],
)
def test_a_move_reads_the_model_once(
    model: str, requests_made: list, version: str, to: str, at_most: int, serialized: bool
) -> None:
    """A move reads the aliases and the versions once; it reads the aliases again after its writes
    only when no lock serialises it. MLflow's client reads the model before each write of its own
    (to refuse prompts), which flexlock cannot spare. Promoting to prod hands the prod alias on."""
    for state in ("dev", "staging", "prod"):
        move(model, "2", state, by="ana")  # prod has a holder to archive
    for state in ("dev", "staging", "prod")[: ("dev", "staging", "prod").index(to)]:
        move(model, version, state, by="ana", approved=True)
    requests_made.clear()

    serialize = (lambda name: nullcontext(True)) if serialized else None
    move(model, version, to, by="bo", approved=to != "dev", serialize=serialize)

    made = [f"{method} {endpoint}" for method, endpoint in requests_made]
    writes = sum(request in WRITES for request in made)
    assert made.count("GET model-versions/search") + made.count("GET model-versions/get") == 1
    assert made.count("GET registered-models/get") <= writes + (1 if serialized else 2)
    assert len(made) <= at_most - serialized
    assert made.count("GET users/current") == (to != "dev")  # dev → staging deletes dev, → prod staging
    assert snapshot(model)[0] == {to: version, **({"archived": "2"} if to == "prod" else {"prod": "2"})}
    if to == "prod":
        assert made.count("DELETE registered-models/alias") == 1  # staging's; prod passed from 2 to 1


def test_a_version_that_is_no_number_is_refused_as_invalid(model: str) -> None:
    before = snapshot(model)
    with pytest.raises(LifecycleError, match=f"refused '{model}' version 'v1' as invalid: .*must be an integer"):
        move(model, "v1", "dev", by="ana")
    assert snapshot(model) == before


def test_an_alias_nobody_holds_resolves_to_a_clear_error(model: str) -> None:
    with pytest.raises(LifecycleError, match=f"^{model} has no version in prod$"):
        resolve(model, "prod")


def registry_calls(name: str) -> dict[str, object]:
    return {
        "move": lambda: move(name, "1", "dev", by="ana"),
        "history": lambda: history(name),
        "resolve": lambda: resolve(name, "prod"),
        "check_move": lambda: check_move(name, "1", "dev"),
        "alias_holder": lambda: alias_holder(None, name, "prod"),
    }


def test_registry_calls_to_a_server_stopped_since_say_it_is_unreachable_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = start_mlflow_server(tmp_path / "mlflow", artifacts_destination=(tmp_path / "artifacts").as_uri())
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        MlflowClient().create_registered_model("churn")
        assert history("churn") == []  # the server answered just now
    finally:
        server.stop()
    for call, run in registry_calls("churn").items():
        started = time.monotonic()
        with pytest.raises(TrackingError, match=f"^MLflow tracking server {url} is unreachable after 3 attempts"):
            run()
        assert time.monotonic() - started < 10, call  # not MLflow's minutes of retries


def test_a_move_without_the_permission_says_so_and_changes_nothing(
    auth_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, password = auth_server
    as_user(monkeypatch, url, "reader", password)
    assert history("churn") == []  # reading is allowed
    with pytest.raises(TrackingError) as caught:
        move("churn", "1", "dev", by="reader")
    assert str(caught.value).startswith(f"MLflow at {url} denied this user access to 'churn' version '1' (HTTP 403")
    assert "needs EDIT on the model" in str(caught.value)
    assert MlflowClient().get_model_version("churn", "1").tags.get(LIFECYCLE) is None


def test_refused_credentials_are_no_missing_model(
    auth_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = auth_server
    as_user(monkeypatch, url, "reader", "not-the-password")
    for call, run in registry_calls("churn").items():
        with pytest.raises(TrackingError, match=f"^MLflow at {url} did not accept the credentials") as caught:
            run()
        assert "no registered model" not in str(caught.value) and "not-the-password" not in str(caught.value), call


@pytest.fixture
def guarded_model(auth_app: AuthApp, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new model behind the basic-auth app (versions 1 and 2) on which `editor` has EDIT and
    `promoter` MANAGE; `reader` has the default, READ. The test is logged in as nobody yet."""
    auth_app.log_in(monkeypatch, "admin")
    name = registered_model("churn", versions=2)
    grant(auth_app, "editor", name, "EDIT")
    grant(auth_app, "promoter", name, "MANAGE")
    return name


def test_a_move_that_needs_to_delete_an_alias_is_refused_before_its_first_write_with_edit_only(
    auth_app: AuthApp, guarded_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EDIT may set an alias but not delete one (MLflow 3.17), and dev → staging deletes `dev`.
    Before, the new alias and history entry were written and the 403 on the delete left `dev`
    in place: a half-applied move."""
    auth_app.log_in(monkeypatch, "editor")
    move(guarded_model, "1", "dev", by="ana")  # sets tags and an alias only: EDIT is enough
    before = snapshot(guarded_model)

    with pytest.raises(TrackingError) as caught:
        move(guarded_model, "1", "staging", by="ana")

    assert snapshot(guarded_model) == before
    assert str(caught.value) == (
        f"MLflow at {auth_app.url} does not let 'editor' move {guarded_model} version 1 to staging: it deletes "
        f"alias 'dev', which needs MANAGE on the model {guarded_model!r}, and 'editor' has EDIT (EDIT may set "
        "an alias but not delete one); nothing was written"
    )


def test_the_promote_flows_check_refuses_an_account_that_could_not_make_the_move_before_any_approval(
    auth_app: AuthApp, guarded_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check_move(..., writes=True)` is the promote flow's first step, run as its own account;
    a person checking before starting the deployment (the CLI) is not asked for MANAGE."""
    auth_app.log_in(monkeypatch, "promoter")
    move(guarded_model, "1", "dev", by="ana")

    auth_app.log_in(monkeypatch, "editor")
    with pytest.raises(TrackingError, match="does not let 'editor' move .* version 1 to staging: .* needs MANAGE"):
        check_move(guarded_model, "1", "staging", writes=True)
    auth_app.log_in(monkeypatch, "reader")
    assert check_move(guarded_model, "1", "staging") == "dev"
    auth_app.log_in(monkeypatch, "promoter")
    assert check_move(guarded_model, "1", "staging", writes=True) == "dev"
    with pytest.raises(LifecycleError, match="version 1 is dev: it may move to staging, archived, not to dev"):
        check_move(guarded_model, "1", "dev", writes=True)  # already there: nothing to approve


def test_a_readers_direct_alias_set_is_refused_while_the_promote_account_moves_the_version(
    auth_app: AuthApp, guarded_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role split: people and ordinary flows read; only the promote flow's account (MANAGE
    on the model) moves versions, and each move records that account beside the reviewer."""
    auth_app.log_in(monkeypatch, "reader")
    with pytest.raises(MlflowException) as refused:
        MlflowClient().set_registered_model_alias(guarded_model, "prod", "1")
    assert refused.value.get_http_status_code() == 403
    assert snapshot(guarded_model)[0] == {}

    auth_app.log_in(monkeypatch, "promoter")
    for state in ("dev", "staging", "prod"):
        move(guarded_model, "1", state, by="ana", approved=state != "dev", flow_run_id="fr-7")

    assert snapshot(guarded_model)[0] == {"prod": "1"}
    assert [(m.to_state, m.by, m.mlflow_user) for m in history(guarded_model)] == [
        ("dev", "ana", "promoter"),
        ("staging", "ana", "promoter"),
        ("prod", "ana", "promoter"),
    ]
    record = json.loads(MlflowClient().get_model_version(guarded_model, "1").tags[HISTORY])
    assert record[-1]["mlflow_user"] == "promoter"
    assert not any(auth_app.passwords["promoter"] in json.dumps(entry) for entry in record)


def died_after_its_history_entry(model: str, version: str, to: str, lifecycle_written: bool) -> None:
    """What a move killed right after its commit point leaves: the history entry (and maybe the
    lifecycle tag), but not the aliases."""
    client = MlflowClient()
    found = client.get_model_version(model, version)
    record = json.loads(found.tags.get(HISTORY, "[]"))
    entry = {"from": found.tags.get(LIFECYCLE), "to": to, "at": "2999-01-01T00:00:00Z", "by": "killed"}
    client.set_model_version_tag(model, version, HISTORY, json.dumps([*record, entry]))
    if lifecycle_written:
        client.set_model_version_tag(model, version, LIFECYCLE, to)


@pytest.mark.parametrize("lifecycle_written", [False, True])
def test_retrying_a_move_that_died_after_its_history_entry_finishes_it(model: str, lifecycle_written: bool) -> None:
    move(model, "1", "dev", by="ana")
    died_after_its_history_entry(model, "1", "staging", lifecycle_written)

    assert move(model, "1", "staging", by="ana") == []  # the retry finds it done
    aliases, versions = snapshot(model)
    assert aliases == {"staging": "1"} and versions["1"][LIFECYCLE] == "staging"
    assert [m.to_state for m in history(model)] == ["dev", "staging"]


def test_the_next_move_of_another_version_finishes_a_move_that_died(model: str) -> None:
    move(model, "1", "dev", by="ana")
    move(model, "1", "staging", by="ana")
    died_after_its_history_entry(model, "1", "prod", lifecycle_written=True)  # alias staging still on 1

    move(model, "2", "dev", by="ana")
    assert snapshot(model)[0] == {"prod": "1", "dev": "2"}
    assert states(model) == {"1": "prod", "2": "dev", "3": None}


def test_an_alias_set_by_hand_on_a_version_never_moved_is_left_alone(model: str) -> None:
    MlflowClient().set_registered_model_alias(model, "staging", "3")
    move(model, "1", "dev", by="ana")
    assert snapshot(model)[0] == {"staging": "3", "dev": "1"}
