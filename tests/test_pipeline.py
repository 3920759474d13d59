"""`Pipeline`, `diag_flow`'s two forms and the diag code version, without a server.

Deployments are built (`to_deployment` needs no API); what runs them is in the integration tests.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from prefect.events.schemas.events import Resource
from prefect.flows import load_flow_from_entrypoint
from typer.testing import CliRunner

from flexlock_prefect import diag_flow, local, serving
from flexlock_prefect import pipeline as pipeline_module
from flexlock_prefect.cli import app
from flexlock_prefect.diag import diag_spec, load_diag
from flexlock_prefect.events import run_resource
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.lock import PrefectState
from flexlock_prefect.pipeline import AUDIT_CRON, Pipeline, serve_pipelines
from flexlock_prefect.tracking.relog import code_version
from tests.helpers import two_pipelines
from tests.helpers.fakes import make_lock

MODULE = os.path.relpath(two_pipelines.__file__, Path.cwd())


def by_flow(pipeline: Pipeline) -> dict:
    return {d.flow_name: d for d in pipeline.to_deployments()}


def test_a_pipeline_is_main_diag_and_relog_all_named_after_the_main_flow() -> None:
    deployments = by_flow(Pipeline(main=two_pipelines.train_a, diag=two_pipelines.diag_a, cron="0 3 * * *"))
    assert set(deployments) == {"train-a", "diag-a", "relog-all"}  # Prefect's flow names
    assert {d.name for d in deployments.values()} == {"train-a"}
    assert deployments["train-a"].entrypoint == f"{MODULE}:train_a"
    assert [s.schedule.cron for s in deployments["train-a"].schedules] == ["0 3 * * *"]
    assert deployments["diag-a"].entrypoint == f"{MODULE}:diag_a"
    assert deployments["relog-all"].entrypoint == "flexlock_prefect.diag.relog_all"
    assert deployments["relog-all"].parameters == {"diag": f"{MODULE}:diag_a", "main": "train-a"}


def test_promote_is_deployed_when_asked_with_the_daily_registry_audit() -> None:
    deployments = by_flow(Pipeline(main=two_pipelines.train_a, diag=two_pipelines.diag_a, promote=True))
    assert deployments["promote"].entrypoint == "flexlock_prefect.promote.promote"
    assert deployments["promote"].name == "train-a"
    audit = deployments["registry-audit"]
    assert (audit.entrypoint, audit.name) == ("flexlock_prefect.audit.registry_audit", "train-a")
    assert [s.schedule.cron for s in audit.schedules] == [AUDIT_CRON]
    assert audit.parameters == {}  # every managed model, no repair


@pytest.mark.parametrize(
    ("promote", "audit", "audited"), [(False, None, False), (True, False, False), (False, True, True)]
)
def test_the_registry_audit_follows_promote_unless_told(promote: bool, audit: bool | None, audited: bool) -> None:
    pipeline = Pipeline(two_pipelines.train_a, two_pipelines.diag_a, promote=promote, audit=audit)
    assert ("registry-audit" in by_flow(pipeline)) is audited


def test_a_diag_in_the_call_form_deploys_from_the_name_it_is_bound_to() -> None:
    [diag] = [
        d for d in Pipeline(two_pipelines.train_b, two_pipelines.diag_for_b).to_deployments() if d.flow_name == "diag-b"
    ]
    assert diag.entrypoint == f"{MODULE}:diag_for_b"
    loaded = load_flow_from_entrypoint(diag.entrypoint)
    assert loaded.name == "diag-b" and set(loaded.parameters.properties) == {"save_dir", "force"}
    assert two_pipelines.diag_for_b.to_deployment(name="direct").entrypoint == f"{MODULE}:diag_for_b"


def test_each_pipelines_diag_fires_only_on_its_own_main_flows_runs(tmp_path: Path) -> None:
    def completed_run_of(flow_name: str) -> Resource:
        prefect = PrefectState(flow_run_id="fr", flow_name=flow_name, deployment_name=None, parameters={})
        return Resource(root=run_resource(make_lock(tmp_path / flow_name, prefect=prefect)))

    pipelines = {
        two_pipelines.train_a.name: Pipeline(two_pipelines.train_a, two_pipelines.diag_a),
        two_pipelines.train_b.name: Pipeline(two_pipelines.train_b, two_pipelines.diag_for_b),
    }
    for name, pipeline in pipelines.items():
        [trigger] = [d for d in pipeline.to_deployments() if d.flow_name.startswith("diag")][0].triggers
        assert trigger.match.matches(completed_run_of(name))
        assert not trigger.match.matches(completed_run_of(({*pipelines} - {name}).pop()))


def test_a_pipeline_refuses_a_diag_that_is_not_a_diag_flow() -> None:
    with pytest.raises(FlexlockError, match="not a diag_flow"):
        Pipeline(main=two_pipelines.train_a, diag=two_pipelines.train_b)


def test_a_diag_flow_carries_its_body_experiment_and_an_explicit_version() -> None:
    spec = diag_spec(two_pipelines.diag_for_b)
    assert spec.body is two_pipelines.log_b and spec.experiment == "pipeline-b"
    assert spec.version == code_version(two_pipelines.log_b)
    pinned = diag_flow(two_pipelines.log_b, version="model-v3")
    assert diag_spec(pinned).version == "model-v3"
    assert diag_spec(two_pipelines.log_b).experiment is None
    assert load_diag(f"{MODULE}:diag_a").body.__name__ == "diag_a"


def test_loading_a_diag_that_is_not_there_is_one_clear_error() -> None:
    with pytest.raises(FlexlockError, match="cannot load the diag"):
        load_diag(f"{MODULE}:no_such_diag")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bodies_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BODIES = """
def shared(x):
    return x

def helper_a(x):
    return shared(x) + {a}

def body_a(save_dir, run):
    return helper_a(1)

def body_b(save_dir, run):
    return shared(2)
"""


def test_the_diag_version_changes_with_the_body_and_what_it_calls_in_its_module_only(tmp_path: Path) -> None:
    versions = []
    for a in (1, 2):  # only helper_a changes; each edition in a file of its own (no stale source cache)
        path = tmp_path / f"edition{a}" / "bodies.py"
        path.parent.mkdir()
        path.write_text(textwrap.dedent(BODIES.format(a=a)))
        versions.append(_load(path))
    before, after = versions
    assert code_version(before.body_a) != code_version(after.body_a)
    assert code_version(before.body_b) == code_version(after.body_b)


@pytest.mark.parametrize("queue", ["default", "diag"])
def test_serving_one_work_queue_serves_what_prefect_yaml_puts_on_that_queue(
    queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    monkeypatch.setattr(pipeline_module, "serve", lambda *deployments, **options: calls.append((deployments, options)))
    pipeline = Pipeline(main=two_pipelines.train_a, diag=two_pipelines.diag_a, promote=True)
    serve_pipelines(pipeline, warm=False, queue=queue)
    [(served, options)] = calls
    on_queue = [e for e in pipeline.to_prefect_yaml(Path.cwd(), "p") if e["work_pool"]["work_queue_name"] == queue]
    assert [d.entrypoint for d in served] == [e["entrypoint"] for e in on_queue]
    assert len(served) == (1 if queue == "default" else 4)
    assert options["pause_on_shutdown"] is False, "a runner of one queue, one of several, paused the schedules"


def test_serve_passes_its_queue_limit_and_cold_start_to_the_example_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    served = []
    monkeypatch.setattr(local, "prefect_api", lambda home: nullcontext("http://127.0.0.1:1/api"))
    monkeypatch.setattr(serving, "serve_examples", lambda **options: served.append(options))
    result = CliRunner().invoke(app, ["serve", "--queue", "diag", "--limit", "2", "--cold"])
    assert result.exit_code == 0, result.output
    assert served == [{"queue": "diag", "limit": 2, "warm": False}]


def test_serving_a_work_queue_no_deployment_is_on_is_refused_before_anything_is_served() -> None:
    pipeline = Pipeline(main=two_pipelines.train_a, diag=two_pipelines.diag_a)
    with pytest.raises(FlexlockError, match="unknown work queue 'gpu': serve 'diag'"):
        serve_pipelines(pipeline, queue="gpu")


def test_init_writes_a_prefect_yaml_with_the_scoped_deployments(tmp_path: Path) -> None:
    output = tmp_path / "prefect.yaml"
    result = CliRunner().invoke(
        app,
        [
            "init",
            "--main",
            f"{MODULE}:train_b",
            "--diag",
            f"{MODULE}:diag_for_b",
            "--pool",
            "p",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    entries = yaml.safe_load(output.read_text())["deployments"]
    assert [e["entrypoint"] for e in entries] == [
        f"{MODULE}:train_b",
        f"{MODULE}:diag_for_b",
        "flexlock_prefect.diag.relog_all",
        "flexlock_prefect.promote.promote",
        "flexlock_prefect.audit.registry_audit",
    ]
    assert entries[1]["triggers"][0]["match"] == {"prefect.resource.id": "flexlock.run.*", "flexlock.flow": "train-b"}
    assert {e["work_pool"]["name"] for e in entries} == {"p"}
    again = CliRunner().invoke(
        app, ["init", "--main", f"{MODULE}:train_b", "--diag", f"{MODULE}:diag_for_b", "--output", str(output)]
    )
    assert again.exit_code != 0 and "exists" in str(again.exception)
