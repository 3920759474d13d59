"""`trace`: from a registered version back to the approval, the runs, the code, the data and the
upstream runs, against a real MLflow server and real git repositories.

Each model is registered from a real locked run of a project whose repo is dirty (its data file
is untracked), so the record holds a snapshot ref; moves go through `registry.move`."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flexlock_prefect import Trace, trace
from flexlock_prefect.lock import Lineage, RunLock, logical_run_key
from flexlock_prefect.registry import APPROVED_BY, LIFECYCLE, move
from flexlock_prefect.trace_view import lineage_mermaid, mermaid_text
from flexlock_prefect.tracking.supersede import mlflowlink
from flexlock_prefect.tracking.tags import LOCK_DIGEST
from tests.helpers.git_repos import write_files
from tests.helpers.runs import cli, locked_run, make_project, register_version

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project with a lockfile (its digest goes in run.lock's `env.lockfiles`)."""
    project = make_project(tmp_path / "project")
    write_files(project, {"requirements.txt": "numpy==2.1.3\n"})
    return project


@pytest.fixture
def staged(mlflow_server: str, project: Path) -> tuple[str, str]:
    """A model whose version 1, registered from the locked run `runs/a`, alice approved into staging."""
    model = f"trace-{uuid.uuid4().hex[:8]}"
    save_dir = locked_run(project, "a")
    version = register_version(model, save_dir)
    move(model, version, "dev", by="ana")
    move(model, version, "staging", by="alice", comment="beats the baseline", approved=True, flow_run_id="fr-42")
    return model, save_dir


def test_trace_of_an_alias_shows_the_approval_the_code_and_the_data_as_run_lock_recorded_them(
    staged: tuple[str, str],
) -> None:
    model, save_dir = staged
    lock = RunLock.load(save_dir)
    code, data = lock.repos["code"], lock.data["input_data"]
    assert code.dirty and code.snapshot_ref  # the untracked data file

    result = cli("trace", f"{model}@staging", columns=400)

    assert result.returncode == 0, result.stderr
    for section in ("Version & history", "Logical run", "Code", "Data", "Environment lockfiles"):
        assert section in result.stdout
    for cells in (
        (APPROVED_BY, "alice"),
        ("dev → staging", "by alice: beats the baseline", "(flow run fr-42)"),
        ("save_dir", lock.logical_run_id),
        ("run.lock", f"digest {lock.digest}"),
        ("code", f"commit {code.commit}, dirty"),
        (f"git checkout {code.snapshot_ref}", f"(in {code.path})"),
        ("input_data", f"{data.algorithm}:{data.digest}"),
        ("code/requirements.txt", lock.env.lockfiles["code/requirements.txt"]),
    ):
        assert has_row(result.stdout, *cells), cells


def test_trace_and_history_show_the_mlflow_account_that_made_each_move_beside_the_reviewer(
    staged: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = staged
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "promoter")  # this server ignores credentials
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "canary-password")
    move(model, "1", "prod", by="bo", comment="ship it", approved=True)

    result = cli("trace", f"{model}@prod", columns=400)

    assert result.returncode == 0, result.stderr
    assert has_row(result.stdout, "staging → prod", "by bo (MLflow account promoter): ship it")
    assert has_row(result.stdout, "dev → staging", "by alice: beats the baseline")  # made without a username
    assert "canary-password" not in result.stdout
    assert has_row(cli("history", model).stdout, "staging", "prod", "bo (MLflow account promoter)", "ship it")


def has_row(output: str, *cells: str) -> bool:
    """A line of `output` (a table row) holds these cells, in this order."""
    return any(re.search(".*".join(map(re.escape, cells)), line) for line in output.splitlines())


def test_json_is_the_trace_as_data_with_the_values_of_the_run_lock(staged: tuple[str, str]) -> None:
    model, save_dir = staged
    lock = RunLock.load(save_dir)

    result = cli("trace", "--json", f"{model}@staging")

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == trace(f"{model}@staging").to_dict()
    version, record = printed["version"], printed["record"]
    assert version["aliases"] == ["staging"]
    assert (version["tags"][LIFECYCLE], version["tags"][APPROVED_BY]) == ("staging", "alice")
    assert version["tags"][LOCK_DIGEST] == record["digest"] == lock.digest
    assert version["history"][-1] == {
        "from": "dev",
        "to": "staging",
        "at": version["tags"]["flexlock.approved_at"],
        "by": "alice",
        "comment": "beats the baseline",
        "flow_run_id": "fr-42",
        "mlflow_user": None,  # the session's server takes no credentials
    }
    [code] = record["code"]
    assert (code["commit"], code["dirty"], code["snapshot_ref"]) == (
        lock.repos["code"].commit,
        True,
        lock.repos["code"].snapshot_ref,
    )
    assert record["data"][0]["digest"] == f"{lock.data['input_data'].algorithm}:{lock.data['input_data'].digest}"
    assert record["config"] == {"lr": "0.1", "input_data": lock.config["input_data"]}
    assert printed["logical_run"]["active_run"] == printed["logical_run"]["version_run"]
    assert printed["problems"] == [] and printed["checks"] is None


def test_an_alias_a_models_uri_and_a_version_number_trace_the_same_version(staged: tuple[str, str]) -> None:
    model, _ = staged
    by_alias = trace(f"{model}@staging").to_dict()
    assert trace((model, "1")).to_dict() == by_alias
    for ref in ([f"models:/{model}@staging"], [model, "1"]):
        result = cli("trace", "--json", *ref)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == by_alias


def test_verify_passes_then_names_a_changed_data_file_and_exits_1(staged: tuple[str, str], project: Path) -> None:
    model, _ = staged
    passed = cli("trace", "--verify", f"{model}@staging", columns=400)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Verification" in passed.stdout and "MISMATCH" not in passed.stdout
    assert [(c.what, c.ok) for c in trace(f"{model}@staging", verify=True).checks] == [
        ("data input_data", True),
        ("code code", True),
        ("run.lock", True),
    ]

    (project / "data" / "points.csv").write_text("x,y\n9,9\n")
    failed = cli("trace", "--verify", f"{model}@staging", columns=400)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert has_row(failed.stdout, "data input_data", "MISMATCH", "changed")
    assert [c.what for c in trace(f"{model}@staging", verify=True).checks if not c.ok] == ["data input_data"]
    assert cli("trace", "--verify", "--json", f"{model}@staging").returncode == 1


def test_a_deleted_save_dir_is_a_reported_problem(staged: tuple[str, str]) -> None:
    model, save_dir = staged
    url = RunLock.load(save_dir).logical_run_id
    shutil.rmtree(save_dir)

    found = trace(f"{model}@staging")
    result = cli("trace", f"{model}@staging", columns=400)

    assert found.problems == (f"save_dir {url} is gone",) and found.record is None
    assert found.logical_run.save_dir == url and found.version.tags[APPROVED_BY] == "alice"
    assert result.returncode == 0, result.stderr
    assert f"save_dir {url} is gone" in result.stdout
    assert not trace(f"{model}@staging", verify=True).verified


def test_a_deleted_run_and_a_version_without_a_run_are_problems_not_errors(staged: tuple[str, str]) -> None:
    model, save_dir = staged
    client = MlflowClient()
    run_id = client.get_model_version(model, "1").run_id
    client.delete_run(run_id)
    bare = client.create_model_version(model, "s3://elsewhere/model").version

    deleted = trace((model, "1"))
    url = RunLock.load(save_dir).logical_run_id
    assert deleted.problems == (
        f"its MLflow run {run_id} is deleted",
        f"its logical run {logical_run_key(url)} has no active MLflow run",
    )
    assert deleted.logical_run.version_run.deleted and deleted.record.save_dir == url
    unlinked = trace((model, str(bare)))
    assert unlinked.problems == ("the version was registered without an MLflow run",)
    assert (unlinked.logical_run.version_run, unlinked.record) == (None, None)


def test_a_relog_of_the_same_run_lock_passes_but_one_of_another_is_noted(
    staged: tuple[str, str], project: Path
) -> None:
    model, save_dir = staged
    with mlflowlink(save_dir):  # a relog of the unchanged run.lock (new diag code, say)
        pass
    relogged = trace(f"{model}@staging")
    assert relogged.problems == ()
    assert relogged.logical_run.version_run.flexlock_status == "deprecated"
    assert relogged.logical_run.active_run.flexlock_status == "active"

    logged = relogged.version.tags[LOCK_DIGEST]
    locked_run(project, "a", lr=0.2)  # the same save_dir recorded again, then relogged
    with mlflowlink(save_dir) as run:
        pass
    now = RunLock.load(save_dir).digest
    assert trace(f"{model}@staging").problems == (
        f"the active run {run.info.run_id} of its logical run was logged from another run.lock "
        f"(digest {now}, the version's {logged})",
        f"the run.lock in its save_dir has digest {now}, not the {logged} the version was logged from",
    )


@pytest.fixture
def chain(mlflow_server: str, project: Path) -> tuple[str, list[str]]:
    """Runs a → b → c, each reading a file the one before wrote into its save_dir, and a model
    registered from c; the model and the save_dirs' URLs, c first."""
    a = locked_run(project, "a")
    Path(a, "features.csv").write_text("f\n1\n")
    b = locked_run(project, "b", input_data=f"{a}/features.csv")
    Path(b, "features.csv").write_text("g\n2\n")
    c = locked_run(project, "c", input_data=f"{b}/features.csv")
    model = f"chain-{uuid.uuid4().hex[:8]}"
    register_version(model, c)
    return model, [RunLock.load(path).logical_run_id for path in (c, b, a)]


def test_upstream_runs_are_traced_recursively(chain: tuple[str, list[str]]) -> None:
    model, (c, b, a) = chain
    found = trace((model, "1"))

    [from_b] = found.record.upstream
    [from_a] = from_b.record.upstream
    assert (from_b.input, from_b.save_dir, from_b.fingerprint) == ("input_data", b, RunLock.load(b).fingerprint)
    assert (from_a.save_dir, from_a.record.upstream, from_a.problems) == (a, (), ())
    result = cli("trace", model, "1", columns=400)
    assert result.returncode == 0, result.stderr
    lineage = result.stdout.split("Lineage", 1)[1]
    assert lineage.index(b) < lineage.index(a) and "└ input_data" in lineage
    flowchart = lineage_mermaid(found)
    assert all(mermaid_text(url) in flowchart for url in (a, b, c)) and flowchart.count("-->|made by|") == 2


def test_a_lineage_cycle_or_a_missing_upstream_is_a_problem_of_its_node(chain: tuple[str, list[str]]) -> None:
    model, (c, b, a) = chain
    edited = RunLock.load(a).model_copy(update={"lineage": {"loop": Lineage(logical_run_id=c, fingerprint="f" * 64)}})
    edited.save()  # lineage is no input: the record still loads

    [cycle] = trace((model, "1")).record.upstream[0].record.upstream[0].record.upstream
    assert (cycle.save_dir, cycle.record, cycle.problems) == (c, None, (f"a lineage cycle: {c} is its own upstream",))

    shutil.rmtree(b.removeprefix("file://"))
    [missing] = trace((model, "1")).record.upstream
    assert (missing.save_dir, missing.record, missing.problems) == (b, None, (f"save_dir {b} is gone",))
    assert "is gone" in lineage_mermaid(trace((model, "1")))


def test_a_trace_is_a_public_name_of_the_package() -> None:
    import flexlock_prefect

    assert flexlock_prefect.trace is trace and flexlock_prefect.Trace is Trace
