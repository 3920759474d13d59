"""★ Event names, resources, payloads and the deployment triggers that match them (DESIGN.md §4).

Pure: events are captured by replacing `emit_event` in the module, triggers are matched with
Prefect's own `ResourceSpecification.matches` and their templates rendered with Jinja.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
from prefect.events.schemas.events import Resource

import flexlock_prefect.events as events
from flexlock_prefect.events import (
    MODEL_DRIFT,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    RELOG_REQUESTED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_RELOGGED,
    diag_trigger,
    emit_model_drift,
    emit_relog_requested,
    emit_relogged,
    emit_run_finished,
    relog_trigger,
    run_payload,
    run_resource,
)
from flexlock_prefect.lock import PrefectState, RunResult, logical_run_key
from tests.helpers.fakes import make_lock


def _result(status: str) -> RunResult:
    return RunResult(
        status=status,
        started_at="2026-01-01T00:00:00.000Z",
        finished_at="2026-01-01T00:01:00.000Z",
        duration_s=60.0,
        outputs={},
        error=None if status == "completed" else "ValueError: boom",
    )


@dataclass
class Sent:
    events: list[dict[str, Any]] = field(default_factory=list)
    drains: list[int] = field(default_factory=list)  # how many events were queued at each drain


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every event the module emits (the keyword arguments of `emit_event`), and every drain."""
    record = Sent()

    class Worker:
        @staticmethod
        def drain_all(timeout: float) -> None:
            record.drains.append(len(record.events))

    monkeypatch.setattr(events, "emit_event", lambda **kwargs: record.events.append(kwargs))
    monkeypatch.setattr(events, "EventsWorker", Worker)
    return record


def _render(template: str, payload: dict[str, Any]) -> str:
    return jinja2.Environment().from_string(template).render(event={"payload": payload})


def test_event_names_are_the_contract_names() -> None:
    assert (RUN_COMPLETED, RUN_FAILED, RUN_RELOGGED) == (
        "flexlock.run.completed",
        "flexlock.run.failed",
        "flexlock.run.relogged",
    )
    assert (MODEL_PROMOTED, MODEL_REJECTED) == ("flexlock.model.promoted", "flexlock.model.rejected")
    assert MODEL_DRIFT == "flexlock.model.drift"
    assert RELOG_REQUESTED == "flexlock.relog.requested"


def test_the_run_resource_is_keyed_by_the_16_hex_logical_run_key(tmp_path: Path) -> None:
    lock = make_lock(tmp_path / "run")
    resource = run_resource(lock)
    assert resource == {
        "prefect.resource.id": f"flexlock.run.{logical_run_key(lock.logical_run_id)}",
        "prefect.resource.name": lock.logical_run_id,
        "flexlock.logical_run_id": lock.logical_run_id,
        "flexlock.save_dir": lock.logical_run_id,
    }
    assert len(resource["prefect.resource.id"].removeprefix("flexlock.run.")) == 16


def test_two_spellings_of_one_save_dir_are_one_resource(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    plain = make_lock(tmp_path / "run")
    spelt_otherwise = make_lock(f"{tmp_path}/./run/")
    assert run_resource(plain) == run_resource(spelt_otherwise)


def test_an_s3_save_dir_is_named_by_its_url() -> None:
    lock = make_lock("s3://bucket/runs/a")
    assert run_resource(lock)["flexlock.save_dir"] == "s3://bucket/runs/a"
    assert run_resource(lock)["prefect.resource.id"] == f"flexlock.run.{logical_run_key('s3://bucket/runs/a')}"


def test_the_run_payload_carries_save_dir_fingerprint_digest_and_status(tmp_path: Path) -> None:
    lock = make_lock(tmp_path / "run", {"lr": 0.1}, result=_result("completed"))
    assert run_payload(lock) == {
        "save_dir": lock.logical_run_id,
        "fingerprint": lock.fingerprint,
        "lock_digest": lock.digest,
        "status": "completed",
    }


def test_a_run_without_a_result_has_no_status_in_its_payload(tmp_path: Path) -> None:
    assert run_payload(make_lock(tmp_path / "run"))["status"] is None


def test_the_run_resource_names_the_main_flow(tmp_path: Path) -> None:
    prefect = PrefectState(flow_run_id="fr-1", flow_name="train", deployment_name=None, parameters={})
    assert run_resource(make_lock(tmp_path / "run", prefect=prefect))["flexlock.flow"] == "train"


def test_a_completed_run_emits_run_completed_with_its_resource_and_payload(tmp_path: Path, sent: Sent) -> None:
    lock = make_lock(tmp_path / "run", result=_result("completed"))
    emit_run_finished(lock)
    assert sent.events == [{"event": RUN_COMPLETED, "resource": run_resource(lock), "payload": run_payload(lock)}]


@pytest.mark.parametrize("result", [_result("failed"), None], ids=["failed", "no-result"])
def test_a_failed_or_unfinished_run_emits_run_failed(tmp_path: Path, sent: Sent, result: RunResult | None) -> None:
    emit_run_finished(make_lock(tmp_path / "run", result=result))
    assert [e["event"] for e in sent.events] == [RUN_FAILED]


def test_relogged_adds_the_mlflow_run_and_the_runs_it_superseded(tmp_path: Path, sent: Sent) -> None:
    lock = make_lock(tmp_path / "run", result=_result("completed"))
    emit_relogged(lock, "run-2", ["run-1"])
    assert sent.events == [
        {
            "event": RUN_RELOGGED,
            "resource": run_resource(lock),
            "payload": run_payload(lock) | {"mlflow_run_id": "run-2", "superseded_run_ids": ["run-1"]},
        }
    ]


def test_a_relog_request_names_the_root_and_is_sent_before_returning(sent: Sent) -> None:
    emit_relog_requested("s3://bucket/runs", force=True)
    assert sent.events == [
        {
            "event": RELOG_REQUESTED,
            "resource": {
                "prefect.resource.id": f"flexlock.root.{logical_run_key('s3://bucket/runs')}",
                "flexlock.root": "s3://bucket/runs",
            },
            "payload": {"root": "s3://bucket/runs", "force": True},
        }
    ]
    assert sent.drains == [1]


def test_drift_is_about_the_model_carries_the_findings_and_is_sent_before_returning(sent: Sent) -> None:
    findings = [{"kind": "alias-misplaced", "model": "churn", "version": "2", "state": "prod", "message": "…"}]
    emit_model_drift("churn", findings)
    assert sent.events == [
        {
            "event": MODEL_DRIFT,
            "resource": {"prefect.resource.id": "flexlock.model.churn", "flexlock.model": "churn"},
            "payload": {"model": "churn", "findings": findings},
        }
    ]
    assert sent.drains == [1]


def test_the_diag_trigger_expects_completed_runs_only() -> None:
    trigger = diag_trigger()
    assert trigger.expect == {RUN_COMPLETED}
    assert trigger.name == "flexlock-diag-on-run-completed"


def test_the_diag_trigger_matches_every_run_resource_and_nothing_else(tmp_path: Path) -> None:
    match = diag_trigger().match
    for save_dir in (tmp_path / "a", tmp_path / "b", "s3://bucket/runs/c"):
        assert match.matches(Resource(root=run_resource(make_lock(save_dir))))
    assert not match.matches(Resource(root={"prefect.resource.id": "flexlock.root.0123456789abcdef"}))
    assert not match.matches(Resource(root={"prefect.resource.id": "prefect.flow-run.1234"}))


def test_the_diag_trigger_runs_once_per_logical_run_with_its_save_dir(tmp_path: Path) -> None:
    trigger = diag_trigger()
    lock = make_lock(tmp_path / "run", result=_result("completed"))
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.parameters is not None and set(trigger.parameters) == {"save_dir"}
    assert _render(trigger.parameters["save_dir"], run_payload(lock)) == lock.logical_run_id


def test_a_scoped_diag_trigger_matches_only_its_main_flows_runs(tmp_path: Path) -> None:
    def resource(flow_name: str) -> Resource:
        prefect = PrefectState(flow_run_id="fr", flow_name=flow_name, deployment_name=None, parameters={})
        return Resource(root=run_resource(make_lock(tmp_path / flow_name, prefect=prefect)))

    trigger = diag_trigger("train_a")
    assert trigger.match.matches(resource("train_a"))
    assert not trigger.match.matches(resource("train_b"))
    assert trigger.name == "flexlock-diag-on-train_a-completed"
    assert diag_trigger().match.matches(resource("train_b")), "unscoped: every main flow"


def test_a_scoped_diag_trigger_takes_the_main_flow_itself() -> None:
    from prefect import flow

    @flow(name="train-a")
    def train_a() -> None: ...

    assert diag_trigger(train_a).match.model_dump()["flexlock.flow"] == "train-a"


def test_a_relog_request_to_a_pipeline_reaches_only_its_relog_trigger(sent: Sent) -> None:
    emit_relog_requested("/data/runs", main="train_a")
    [event] = sent.events
    assert relog_trigger("train_a").match.matches(Resource(root=event["resource"]))
    assert not relog_trigger("train_b").match.matches(Resource(root=event["resource"]))


def test_the_relog_trigger_matches_relog_requests_for_any_root(sent: Sent) -> None:
    trigger = relog_trigger()
    emit_relog_requested("/data/runs")
    assert trigger.expect == {RELOG_REQUESTED} and trigger.for_each == {"prefect.resource.id"}
    assert trigger.match.matches(Resource(root=sent.events[0]["resource"]))
    assert not trigger.match.matches(Resource(root={"prefect.resource.id": "flexlock.run.0123456789abcdef"}))


@pytest.mark.parametrize("force", [True, False])
def test_the_relog_trigger_passes_root_as_text_and_force_as_a_bool(force: bool) -> None:
    parameters = relog_trigger().parameters
    assert parameters is not None and set(parameters) == {"root", "force"}
    payload = {"root": "s3://bucket/runs", "force": force}
    assert _render(parameters["root"], payload) == "s3://bucket/runs"
    force_parameter = parameters["force"]
    assert force_parameter["__prefect_kind"] == "json"
    assert force_parameter["value"]["__prefect_kind"] == "jinja"
    assert json.loads(_render(force_parameter["value"]["template"], payload)) is force
