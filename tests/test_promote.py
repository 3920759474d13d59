"""Approval-gated promotion against a real Prefect API, MLflow server and Model Registry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from contextvars import copy_context
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import FlowPauseTimeout, NotPausedError
from prefect.flow_runs import resume_flow_run

from flexlock_prefect import promote as promote_module
from flexlock_prefect.events import MODEL_PROMOTED, MODEL_REJECTED
from flexlock_prefect.examples import diag as example_diag
from flexlock_prefect.examples import train as example_train
from flexlock_prefect.exceptions import LifecycleError, TrackingError
from flexlock_prefect.local import free_port
from flexlock_prefect.promote import PromotionRejected, promote
from flexlock_prefect.registry import APPROVED_BY, LIFECYCLE, history, move
from flexlock_prefect.trace_view import mermaid_text
from tests.helpers.prefect_api import artifacts, wait_for_events
from tests.helpers.servers import AuthApp, grant

pytestmark = pytest.mark.integration


def registered_by_diag(tmp_path: Path, strengths: tuple[str, ...] = ("0.5", "1.0")) -> str:
    """A new model with a version per regularisation strength, each registered by the example's
    diag flow from a real main run, on the MLflow server the environment names; its name."""
    name = f"promo-{uuid.uuid4().hex[:6]}"
    data = example_train.prepare_example_data(tmp_path / "data.csv")
    for index, strength in enumerate(strengths):
        save_dir = example_train.train(
            overrides=[
                f"input_data={data}",
                f"save_dir={tmp_path}/runs/{index}",
                f"model_name={name}",
                f"model.C={strength}",
            ]
        )
        example_diag.diag(save_dir=save_dir)
    return name


@pytest.fixture
def model(prefect_api: str, mlflow_server: str, tmp_path: Path) -> str:
    """A model with versions 1 and 2, each registered by the diag flow from a real main run."""
    return registered_by_diag(tmp_path)


@pytest.fixture
def guarded(prefect_api: str, auth_app: AuthApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A model behind MLflow's basic-auth app, version 1 registered by the admin's diag;
    `promoter` has MANAGE on it, `editor` EDIT, everyone else the default READ."""
    auth_app.log_in(monkeypatch, "admin")
    name = registered_by_diag(tmp_path, ("1.0",))
    grant(auth_app, "promoter", name, "MANAGE")
    grant(auth_app, "editor", name, "EDIT")
    return name


def test_behind_the_auth_app_only_the_promote_account_moves_versions_and_the_history_names_it(
    auth_app: AuthApp, guarded: str, promotions: Promotions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_app.log_in(monkeypatch, "reader")
    with pytest.raises(MlflowException) as refused:
        MlflowClient().set_registered_model_alias(guarded, "prod", "1")  # around the approval flow
    assert refused.value.get_http_status_code() == 403

    auth_app.log_in(monkeypatch, "promoter")
    promote(model=guarded, version="1", to="dev", approval=False)
    promote_with(promotions, approve_with_client, model=guarded, version="1", to="staging")
    assert state(guarded) == ({"staging": "1"}, {"1": ("staging", "bo")})
    assert [(m.to_state, m.by, m.mlflow_user) for m in history(guarded)] == [
        ("dev", "flexlock-prefect", "promoter"),
        ("staging", "bo", "promoter"),
    ]

    auth_app.log_in(monkeypatch, "editor")  # a promote flow run with an account that has EDIT only
    with pytest.raises(TrackingError, match="does not let 'editor' move .* to prod: it deletes alias 'staging', wh"):
        promote(model=guarded, version="1", to="prod", timeout=5)  # refused before it asks for approval
    assert state(guarded) == ({"staging": "1"}, {"1": ("staging", "bo")})


def state(name: str) -> tuple[dict, dict]:
    client = MlflowClient()
    tags = {
        v.version: (v.tags.get(LIFECYCLE), v.tags.get(APPROVED_BY))
        for v in client.search_model_versions(f"name='{name}'")
    }
    return dict(client.get_registered_model(name).aliases), tags


class Promotions:
    """Promote flows running in threads of this test, each under a flow run name of its own, so
    that a promotion finds its own paused run and never another test's (or a leftover's)."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.executor = executor
        self.started: dict[str, Future] = {}

    def submit(self, **parameters) -> tuple[Future, str]:
        """Start one promotion (in a copy of this context: the test's Prefect API); returns it and
        its flow run name."""
        name = f"promote-{uuid.uuid4().hex[:8]}"
        flow = promote.with_options(flow_run_name=name)
        future = self.executor.submit(copy_context().run, flow, poll_interval=1, **parameters)
        self.started[name] = future
        return future, name

    def paused(self, names: list[str]) -> list[FlowRun]:
        """Those of the named flow runs that are paused for approval."""
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=names),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                ),
            )

    def wait_until_paused(self, names: list[str], timeout_s: float = 90) -> list[FlowRun]:
        """The named flow runs once all of them are paused; raises what ended one early."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            paused = self.paused(names)
            if len(paused) == len(names):
                return paused
            for name in names:
                if self.started[name].done():
                    self.started[name].result()  # raise what ended it early
            time.sleep(0.5)
        raise AssertionError(f"{len(names) - len(paused)} of the promotions {names} never paused for approval")

    def stop(self, timeout_s: float = 120) -> None:
        """Reject every promotion of this test still waiting for approval (one may pause only
        now) until all have ended, then stop the threads: none outlives the test's Prefect API."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            waiting = [name for name, future in self.started.items() if not future.done()]
            if not waiting:
                break
            for run in self.paused(waiting):
                with suppress(NotPausedError, FlowPauseTimeout, RuntimeError):  # it ended meanwhile
                    approve_with_client(str(run.id), False, "the test ended")
            wait([self.started[name] for name in waiting], timeout=0.5)
        self.executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def promotions(prefect_api: str) -> Iterator[Promotions]:
    """Two threads for promotions that wait for approval, stopped with the test."""
    started = Promotions(ThreadPoolExecutor(2, thread_name_prefix="promote"))
    try:
        yield started
    finally:
        started.stop()


def start(promotions: Promotions, **parameters) -> tuple[Future, str]:
    """Run the promote flow in a thread; return it and the id of its flow run once it is paused."""
    future, name = promotions.submit(**parameters)
    [run] = promotions.wait_until_paused([name])
    return future, str(run.id)


def approve_with_client(run_id: str, approved: bool = True, comment: str = "looks good") -> None:
    decision = "approve" if approved else "reject"
    resume_flow_run(run_id, run_input={"decision": decision, "reviewer": "bo", "comment": comment})


def approve_with_cli(run_id: str, *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "approve", run_id, "--reviewer", "bo", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def promote_with(promotions: Promotions, answer: Callable[[str], None], **parameters) -> str:
    future, run_id = start(promotions, **parameters)
    answer(run_id)
    return future.result(timeout=120)


def test_a_version_is_promoted_to_prod_with_approvals_and_replaces_the_old_prod(
    model: str, promotions: Promotions
) -> None:
    assert promote(model=model, version="1", to="dev", approval=False) == f"models:/{model}@dev"
    promote_with(promotions, approve_with_client, model=model, version="1", to="staging")
    promote_with(
        promotions,
        lambda run_id: approve_with_cli(run_id, "--comment", "ship it"),
        model=model,
        version="1",
        to="prod",
        checks=["accuracy >= 0.9"],
    )
    assert state(model) == ({"prod": "1"}, {"1": ("prod", "bo"), "2": (None, None)})

    promote(model=model, version="2", to="dev", approval=False)
    promote_with(promotions, approve_with_client, model=model, version="2", to="staging")
    promote_with(
        promotions,
        approve_with_client,
        model=model,
        version="2",
        to="prod",
        checks=["accuracy >= prod.accuracy - 0.05"],
    )

    aliases, tags = state(model)
    assert aliases == {"prod": "2", "archived": "1"} and tags["1"][0] == "archived" and tags["2"][0] == "prod"
    moves = [(m.version, m.from_state, m.to_state, m.by) for m in history(model)]
    assert ("1", "staging", "prod", "bo") in moves and ("1", "prod", "archived", "bo") in moves
    [event] = wait_for_events(MODEL_PROMOTED, f"flexlock.model.{model}.2", to="prod")
    assert event.payload["approved_by"] == "bo" and event.payload["from"] == "staging"
    loaded = mlflow.sklearn.load_model(f"models:/{model}@prod")
    assert loaded.predict([[0.0] * 30]).shape == (1,)


def test_rejection_and_timeout_leave_the_registry_exactly_as_it_was(model: str, promotions: Promotions) -> None:
    promote(model=model, version="1", to="dev", approval=False)
    before = state(model)
    with pytest.raises(PromotionRejected, match="not convinced"):
        promote_with(
            promotions,
            lambda run_id: approve_with_client(run_id, False, "not convinced"),
            model=model,
            version="1",
            to="staging",
        )
    assert state(model) == before
    wait_for_events(MODEL_REJECTED, f"flexlock.model.{model}.1", comment="not convinced")

    future, _ = promotions.submit(model=model, version="1", to="staging", timeout=2)  # no waiting for a 2 s pause
    with pytest.raises(PromotionRejected, match="no approval within 2 s"):
        future.result(timeout=120)
    assert state(model) == before


def test_an_approval_form_submitted_without_a_decision_is_refused_and_the_run_stays_paused(
    model: str, promotions: Promotions
) -> None:
    promote(model=model, version="1", to="dev", approval=False)
    future, run_id = start(promotions, model=model, version="1", to="staging")
    with pytest.raises(RuntimeError, match="decision"):
        resume_flow_run(run_id, run_input={"reviewer": "bo", "comment": ""})  # the form as it opens
    assert state(model)[0] == {"dev": "1"} and not future.done()
    approve_with_client(run_id)
    assert future.result(timeout=120) == f"models:/{model}@staging"


def test_a_promoted_version_follows_its_save_dir_through_a_relog_and_the_evidence_names_both_runs(
    model: str, promotions: Promotions, tmp_path: Path
) -> None:
    """DESIGN.md §6: a relog of the same model reuses the version, and promotion then checks the
    version's logical run, whose active run is the relog's, against the version's lock digest."""
    promote(model=model, version="1", to="dev", approval=False)
    promote_with(promotions, approve_with_client, model=model, version="1", to="staging")
    first_run = MlflowClient().get_model_version(model, "1").run_id

    relogged = example_diag.diag(save_dir=f"file://{tmp_path}/runs/0", force=True)

    assert sorted(state(model)[1]) == ["1", "2"]  # no new version: the model bytes are the same
    assert promote_with(promotions, approve_with_client, model=model, version="1", to="prod") == f"models:/{model}@prod"
    report = evidence(model, "1")
    assert "| ✅ | record | the active flexlock run of its save_dir" in report
    assert f"| candidate | 1 | [{first_run}](" in report
    assert f"| its save_dir's active run (same run.lock, relogged) | | [{relogged}](" in report


def test_a_version_whose_save_dir_was_run_again_into_another_record_is_refused(model: str, tmp_path: Path) -> None:
    from flexlock_prefect import relog

    save_dir = f"{tmp_path}/runs/0"
    example_train.train(overrides=[f"input_data={tmp_path}/data.csv", f"save_dir={save_dir}", "model.C=0.2"])
    [relogged] = relog([save_dir])  # the default body: the version still names the first record
    assert relogged.outcome == "relogged"
    with pytest.raises(PromotionRejected, match=f"its active run {relogged.run_id} was logged from another run.lock"):
        promote(model=model, version="1", to="dev", approval=False)


def test_the_evidence_draws_what_produced_the_candidate_as_a_mermaid_flowchart(model: str, tmp_path: Path) -> None:
    promote(model=model, version="1", to="dev", approval=False)
    provenance = evidence(model, "1").split("\n## Provenance\n\n", 1)[1]
    assert provenance.startswith("```mermaid\nflowchart LR\n") and provenance.endswith("\n```\n")
    assert f"{model} version 1" in provenance and mermaid_text(f"file://{tmp_path}/runs/0") in provenance


def test_a_failing_check_stops_before_approval_is_asked(model: str) -> None:
    promote(model=model, version="1", to="dev", approval=False)
    before = state(model)
    with pytest.raises(PromotionRejected, match="accuracy is .*, needs >= 1.5"):
        promote(model=model, version="1", to="staging", checks=["accuracy >= 1.5"])
    assert state(model) == before


@pytest.mark.parametrize(
    ("version", "to", "message"),
    [
        ("1", "prod", "is new: it may move to dev, archived"),
        ("7", "dev", "has no version 7"),
        ("1", "production", "unknown lifecycle state"),
    ],
)
def test_illegal_promotions_are_refused_before_anything_happens(
    model: str, version: str, to: str, message: str
) -> None:
    before = state(model)
    with pytest.raises(LifecycleError, match=message):
        promote(model=model, version=version, to=to, approval=False)
    assert state(model) == before


def test_an_archived_version_cannot_return_to_prod(model: str) -> None:
    move(model, "1", "archived", by="ana")
    with pytest.raises(LifecycleError, match="is archived: it may move to nothing"):
        promote(model=model, version="1", to="prod")


def test_the_cli_history_lists_the_moves(model: str) -> None:
    promote(model=model, version="1", to="dev", approval=False)
    result = subprocess.run(
        [sys.executable, "-m", "flexlock_prefect", "history", model],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0 and "dev" in result.stdout and "flexlock-prefect" in result.stdout


def test_two_concurrent_promotions_to_prod_end_with_one_holder_and_consistent_tags(
    model: str, promotions: Promotions
) -> None:
    for version in ("1", "2"):
        promote(model=model, version=version, to="dev", approval=False)
        move(model, version, "staging", by="ana")
    futures, names = zip(*(promotions.submit(model=model, version=v, to="prod") for v in "12"), strict=True)
    paused = promotions.wait_until_paused(list(names), timeout_s=120)
    assert len(paused) == 2
    for run in paused:  # approve both at once: the moves race for the model's lock
        approve_with_client(str(run.id))
    assert [f.result(timeout=120) for f in futures] == [f"models:/{model}@prod"] * 2
    aliases, tags = state(model)
    in_prod = [version for version, (lifecycle, _) in tags.items() if lifecycle == "prod"]
    assert in_prod == [aliases["prod"]]
    assert sorted(lifecycle or "new" for lifecycle, _ in tags.values()) == ["archived", "prod"]


def evidence(model: str, version: str) -> str:
    """The newest evidence artifact of a promotion of `model` `version`."""
    return artifacts(f"promotion-{model}-{version}")[0].data


def test_an_archived_version_whose_save_dir_is_gone_does_not_stop_a_promotion(
    model: str, promotions: Promotions, tmp_path: Path
) -> None:
    move(model, "1", "archived", by="ana")
    shutil.rmtree(tmp_path / "runs" / "0")  # an old version's outputs cleaned up
    promote(model=model, version="2", to="dev", approval=False)
    future, run_id = start(promotions, model=model, version="2", to="staging", checks=["accuracy >= 0.5"])
    report = evidence(model, "2")
    assert "to `staging`" in report and "| ✅ | record | the active flexlock run of its save_dir" in report
    assert "| ✅ | `accuracy >= 0.5` | accuracy is " in report
    approve_with_client(run_id)
    assert future.result(timeout=120) == f"models:/{model}@staging"
    assert state(model)[0] == {"staging": "2", "archived": "1"}


def test_a_record_that_is_gone_is_a_failed_check_in_the_evidence_not_a_crash(model: str, tmp_path: Path) -> None:
    for step in ("dev", "staging", "prod"):
        move(model, "1", step, by="ana")
    promote(model=model, version="2", to="dev", approval=False)
    before = state(model)

    shutil.rmtree(tmp_path / "runs" / "0")  # the prod version the rule compares with
    holder_gone = f"the prod version 1, which the checks compare with: its save_dir file://{tmp_path}/runs/0 is gone"
    with pytest.raises(PromotionRejected, match=re.escape(holder_gone)):
        promote(model=model, version="2", to="staging", checks=["accuracy >= prod.accuracy - 0.5"])
    assert f"| ❌ | record | {holder_gone} |" in evidence(model, "2")

    shutil.rmtree(tmp_path / "runs" / "1")  # the candidate's own
    candidate_gone = f"version 2: its save_dir file://{tmp_path}/runs/1 is gone"
    with pytest.raises(PromotionRejected, match=re.escape(candidate_gone)):
        promote(model=model, version="2", to="staging")
    assert f"| ❌ | record | {candidate_gone} |" in evidence(model, "2")

    assert state(model) == before
    rejected = wait_for_events(MODEL_REJECTED, f"flexlock.model.{model}.2", count=2, to="staging")
    assert sorted(holder_gone in e.payload["comment"] for e in rejected) == [False, True]


def test_an_api_error_while_waiting_for_approval_is_no_timeout(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def api_down(**_: object) -> None:
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(promote_module, "pause_flow_run", api_down)
    before = state(model)
    with pytest.raises(httpx.ConnectError, match="All connection attempts failed"):
        promote(model=model, version="1", to="dev", timeout=5)
    assert state(model) == before


def test_a_promotion_against_an_unreachable_mlflow_says_so_within_seconds(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"^MLflow tracking server {url} is unreachable"):
        promote(model="churn", version="1", to="dev", approval=False)
    assert time.monotonic() - started < 20
