"""The registry audit against a real MLflow server (and Prefect, for its event and flow):
aliases, lifecycle tags and approvals checked against the lifecycle history, and repaired
without ever inventing an approval (DESIGN.md §6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

from flexlock_prefect.audit import ARTIFACT_KEY, registry_audit
from flexlock_prefect.events import MODEL_DRIFT
from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.registry import APPROVED_AT, APPROVED_BY, HISTORY, LIFECYCLE, audit, history, move
from flexlock_prefect.tracking.audit import managed_models
from tests.helpers.models import registered_model
from tests.helpers.prefect_api import artifacts, wait_for_events
from tests.helpers.runs import cli

pytestmark = [pytest.mark.integration, pytest.mark.one_prefect]


@pytest.fixture
def model(mlflow_server: str) -> str:
    """Version 1 approved into prod, version 2 in dev, version 3 new: all as moves leave it."""
    name = registered_model("audit")
    for state in ("dev", "staging", "prod"):
        move(name, "1", state, by="ana", approved=state != "dev")
    move(name, "2", "dev", by="bo")
    return name


def snapshot(name: str) -> tuple[dict, dict]:
    """Aliases and every version's tags."""
    client = MlflowClient()
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{name}'")}
    return dict(client.get_registered_model(name).aliases), versions


def found(findings: list) -> set[tuple[str, str, str | None]]:
    return {(f.kind, f.version, f.state) for f in findings}


def append_move(name: str, version: str, entry: dict) -> None:
    """A history entry written by hand (as a move that lost a race, or an edit, leaves one)."""
    client = MlflowClient()
    record = json.loads(client.get_model_version(name, version).tags.get(HISTORY, "[]"))
    client.set_model_version_tag(name, version, HISTORY, json.dumps([*record, entry]))


def test_a_registry_changed_only_by_moves_has_no_findings(model: str) -> None:
    move(model, "2", "staging", by="bo", approved=True)
    move(model, "3", "dev", by="bo")
    move(model, "2", "prod", by="cy", approved=True)  # archives version 1
    assert snapshot(model)[0] == {"prod": "2", "archived": "1", "dev": "3"}
    assert audit(model) == []


def test_a_version_left_in_dev_by_a_newer_one_is_no_finding(model: str) -> None:
    move(model, "3", "dev", by="bo")
    move(model, "3", "staging", by="bo", approved=True)  # took dev's alias with it; version 2 stays in dev
    assert audit(model) == []


def test_prod_set_by_hand_is_named_and_repair_gives_prod_back_to_the_recorded_holder(model: str) -> None:
    MlflowClient().set_registered_model_alias(model, "prod", "2")

    findings = audit(model)
    assert found(findings) == {("alias-misplaced", "2", "prod"), ("unapproved", "2", "prod")}
    [misplaced] = [f for f in findings if f.kind == "alias-misplaced"]
    assert misplaced.message.startswith("alias prod names version 2, whose history ends in dev (")
    assert "by the histories it names version 1 (in prod since " in misplaced.message

    repaired = audit(model, repair=True)
    assert found(repaired) == found(findings) and all(f.repaired for f in repaired)
    assert snapshot(model)[0] == {"prod": "1", "dev": "2"}
    assert audit(model) == []


def test_a_prod_version_without_approval_is_reported_and_repair_does_not_give_it_the_alias(model: str) -> None:
    move(model, "2", "staging", by="bo", approved=True)
    move(model, "2", "prod", by="bo")  # no approval recorded
    MlflowClient().delete_registered_model_alias(model, "prod")
    before = snapshot(model)

    findings = audit(model, repair=True)
    assert found(findings) == {("alias-missing", "2", "prod"), ("unapproved", "2", "prod")}
    assert not any(f.repaired for f in findings)
    [missing] = [f for f in findings if f.kind == "alias-missing"]
    assert "whose move into it was not approved: repair will not give it the alias" in missing.message
    assert snapshot(model) == before
    assert found(audit(model, repair=True)) == found(findings)  # idempotent: nothing more to do


def test_what_a_move_refused_half_way_leaves_is_reported_and_repaired(model: str) -> None:
    """Before moves checked their permissions first, a 403 on deleting `dev` (EDIT but no
    MANAGE) left version 2's approved move to staging written, with `dev` still on it."""
    at = "2999-01-01T00:00:00Z"
    append_move(model, "2", {"from": "dev", "to": "staging", "at": at, "by": "bo", "mlflow_user": "editor"})
    client = MlflowClient()
    for key, value in {LIFECYCLE: "staging", APPROVED_BY: "bo", APPROVED_AT: at}.items():
        client.set_model_version_tag(model, "2", key, value)
    client.set_registered_model_alias(model, "staging", "2")

    [leftover] = audit(model)
    assert (leftover.kind, leftover.version, leftover.state) == ("alias-misplaced", "2", "dev")
    assert leftover.message.startswith("alias dev names version 2, whose history ends in staging")
    audit(model, repair=True)
    assert snapshot(model)[0] == {"prod": "1", "staging": "2"}
    assert audit(model) == []


def test_a_lifecycle_tag_that_disagrees_with_the_history_is_realigned(model: str) -> None:
    client = MlflowClient()
    client.set_model_version_tag(model, "2", LIFECYCLE, "staging")  # its history ends in dev
    client.set_model_version_tag(model, "3", LIFECYCLE, "dev")  # never moved

    findings = audit(model)
    assert found(findings) == {
        ("lifecycle-tag", "2", "dev"),
        ("lifecycle-tag", "3", None),
        ("unapproved", "2", "staging"),
    }
    [tag] = [f for f in findings if f.kind == "lifecycle-tag" and f.version == "2"]
    assert tag.message.startswith(f"version 2: its tag {LIFECYCLE} says staging, but its history ends in dev (")

    assert all(f.repaired for f in audit(model, repair=True))
    tags = snapshot(model)[1]
    assert tags["2"][LIFECYCLE] == "dev" and LIFECYCLE not in tags["3"]
    assert audit(model) == []


def test_a_second_version_in_prod_by_its_tag_is_realigned(model: str) -> None:
    MlflowClient().set_model_version_tag(model, "3", LIFECYCLE, "prod")

    findings = audit(model)
    assert found(findings) == {
        ("lifecycle-tag", "3", None),
        ("shared-state", "3", "prod"),
        ("unapproved", "3", "prod"),
    }
    [shared] = [f for f in findings if f.kind == "shared-state"]
    assert shared.message == (
        f"version 3 is in prod by its tag {LIFECYCLE}, as is version 1: one version at most may be in prod, "
        "and by the histories version 1 is"
    )
    assert all(f.repaired for f in audit(model, repair=True))
    assert audit(model) == []


def test_two_histories_in_prod_are_reported_and_left_to_a_person(model: str) -> None:
    append_move(model, "2", {"from": "dev", "to": "prod", "at": "2000-01-01T00:00:00.000Z", "by": "mallory"})

    findings = audit(model, repair=True)
    assert ("shared-state", "2", "prod") in found(findings)
    [shared] = [f for f in findings if f.kind == "shared-state"]
    assert not shared.repaired  # as it stands after the repair, which aligned the tag with the history:
    assert shared.message.startswith(f"version 2 is in prod by its tag {LIFECYCLE} and history, as is version 1:")
    assert shared.message.endswith("and by the histories version 1 is")
    # the tag follows its history, and the dev alias leaves a version whose history left dev
    assert sorted(f.kind for f in findings if f.repaired) == ["alias-misplaced", "lifecycle-tag"]
    assert snapshot(model)[0]["prod"] == "1"  # the recorded holder keeps prod
    assert {f.kind for f in audit(model)} == {"shared-state", "unapproved"}


def test_an_unreadable_history_is_reported_and_left_alone(model: str) -> None:
    client = MlflowClient()
    client.set_model_version_tag(model, "2", HISTORY, "[{not json")
    client.set_model_version_tag(model, "3", HISTORY, json.dumps({"to": "prod"}))
    before = snapshot(model)

    findings = audit(model, repair=True)
    assert found(findings) == {("unreadable-history", "2", None), ("unreadable-history", "3", None)}
    assert not any(f.repaired for f in findings)
    [two, three] = sorted(findings, key=lambda f: f.version)
    assert two.message.startswith(f"{model} version 2: its tag {HISTORY} is not JSON (")
    assert three.message.startswith(f"{model} version 3: its tag {HISTORY} is not a list of moves")
    assert snapshot(model) == before  # the dev alias on version 2 stays: its state is unknown
    with pytest.raises(LifecycleError, match=f"{model} version 2: its tag {HISTORY} is not JSON"):
        history(model)


def test_approval_tags_that_name_no_move_are_reported_and_kept(model: str) -> None:
    MlflowClient().set_model_version_tag(model, "2", APPROVED_BY, "mallory")

    [finding] = audit(model, repair=True)
    assert (finding.kind, finding.version, finding.repaired) == ("approval-unrecorded", "2", False)
    assert finding.message == (
        f"version 2: its approval tags name no move of its history ({APPROVED_BY}='mallory', flexlock.approved_at=None)"
    )
    assert snapshot(model)[1]["2"][APPROVED_BY] == "mallory"


def test_the_audit_reads_and_repairs_under_the_lock_it_is_given(model: str) -> None:
    MlflowClient().set_registered_model_alias(model, "prod", "2")
    held: list[str] = []

    @contextmanager
    def lock(name: str) -> Iterator[bool]:
        held.append(name)
        yield True

    assert all(f.repaired for f in audit(model, repair=True, serialize=lock))
    assert held == [model]


def test_the_managed_models_are_those_with_a_lifecycle_tag(model: str) -> None:
    plain = registered_model("plain", versions=1)
    MlflowClient().set_registered_model_alias(plain, "prod", "1")  # not flexlock's to audit
    managed = managed_models()
    assert model in managed and plain not in managed


def test_the_cli_names_each_finding_exits_1_and_repairs_without_a_prefect_api(model: str) -> None:
    MlflowClient().set_registered_model_alias(model, "prod", "2")

    audited = cli("audit", model)
    assert audited.returncode == 1, audited.stderr
    lines = audited.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["alias-misplaced", "unapproved"]
    assert audited.stderr.count("\n") == 1 and f"audit {model} --repair" in audited.stderr

    repaired = cli("audit", model, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.splitlines()[0].startswith("repaired alias-misplaced: alias prod names version 2")
    assert f"{model}: repaired 2 of 2 findings" in repaired.stdout

    clean = cli("audit", model)
    assert (clean.returncode, clean.stdout.strip()) == (
        0,
        f"{model}: every alias, lifecycle tag and approval agrees with the lifecycle history",
    )


def test_a_repair_that_leaves_findings_exits_1_saying_what_remains(model: str) -> None:
    MlflowClient().set_model_version_tag(model, "2", APPROVED_BY, "mallory")
    result = cli("audit", model, "--repair")
    assert result.returncode == 1
    assert result.stdout.startswith("unresolved approval-unrecorded: version 2:")
    assert result.stderr.startswith(f"error: {model}: 1 finding that repair cannot resolve: each needs a person")


def test_the_cli_emits_the_drift_event_with_the_findings(model: str, prefect_api: str) -> None:
    MlflowClient().set_registered_model_alias(model, "prod", "2")
    assert cli("audit", model).returncode == 1

    [event] = wait_for_events(MODEL_DRIFT, f"flexlock.model.{model}", model=model)
    assert event.resource["flexlock.model"] == model
    assert [(f["kind"], f["version"], f["state"], f["repaired"]) for f in event.payload["findings"]] == [
        ("alias-misplaced", "2", "prod", False),
        ("unapproved", "2", "prod", False),
    ]
    assert all(f["message"] and f["model"] == model for f in event.payload["findings"])


def test_the_registry_audit_flow_publishes_the_findings_and_completes(model: str, prefect_api: str) -> None:
    MlflowClient().set_registered_model_alias(model, "prod", "2")
    clean = registered_model("clean", versions=1)
    move(clean, "1", "dev", by="ana")

    state = registry_audit(models=[model, clean], return_state=True)
    assert state.is_completed(), state
    assert found(state.result()) == {("alias-misplaced", "2", "prod"), ("unapproved", "2", "prod")}
    [artifact, *_] = artifacts(ARTIFACT_KEY)
    assert "audit of 2 models: 2 findings" in artifact.data and "alias-misplaced" in artifact.data
    wait_for_events(MODEL_DRIFT, f"flexlock.model.{model}", model=model)

    repaired = registry_audit(models=[model], repair=True)
    assert all(f.repaired for f in repaired) and snapshot(model)[0]["prod"] == "1"


def test_a_model_the_flow_cannot_audit_fails_it_after_the_others(model: str, prefect_api: str) -> None:
    state = registry_audit(models=["nope", model], return_state=True)
    assert state.is_failed()
    assert "1 of 2 models failed to audit: nope" in state.message
    [artifact, *_] = artifacts(ARTIFACT_KEY)
    assert "no registered model named 'nope'" in artifact.data and "1 model audited: every alias" in artifact.data
