"""What a person sees (issue 14): the demo's Prefect and MLflow UIs in a headless Chromium.

The demo runs once for the module, as `flexlock-prefect demo --keep` runs it (a Prefect server with its
UI on a free loopback port, the served example pipeline, one main run and the diag run its event
triggers, logging to a local SQLite MLflow store), then `mlflow server` opens that store (what the
demo's `mlflow ui --backend-store-uri …` line does) and one forced relog deprecates the diag's run.
The model version the relog registers is then promoted to staging, and the promotion pauses for a
reviewer: the module looks at its approval form and evidence as the reviewer does.
Screenshots (1600x1000) go to a directory the module prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext, suppress
from contextvars import copy_context
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from tests.helpers.browser import Page, chromium, chromium_executable

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Artifact, FlowRun

pytestmark = [
    pytest.mark.integration,
    pytest.mark.prefect,
    pytest.mark.skipif(
        chromium_executable() is None, reason="no chromium on PATH: `apt-get install chromium` (.ci/run installs it)"
    ),
]

ACTIVE_FILTER = "tags.`flexlock.status` = 'active'"
MODEL = "breast-cancer-classifier"  # the example config's model_name (flexlock_prefect.examples.train)
RULE = "accuracy >= 0.9"  # holds for the example model (~0.96)


@dataclass(frozen=True)
class Demo:
    prefect_ui: str  # what the demo prints as "Prefect UI"
    save_dir: str
    main_run: FlowRun
    diag_run: FlowRun
    mlflow_ui: str
    experiment_id: str
    active_run_ids: set[str]
    deprecated_run_ids: set[str]
    shots: Path
    prefect_server_log: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    from mlflow import MlflowClient

    from flexlock_prefect import RunLock, local, relog
    from flexlock_prefect.demo import DEMO_EXPERIMENT, DIAG_DEPLOYMENT, run_demo
    from flexlock_prefect.examples.diag import log_example_run
    from tests.helpers.prefect_api import flow_run, wait_for_flow_runs
    from tests.helpers.servers import prefect_client_pointed_at, start_mlflow_server

    root = tmp_path_factory.mktemp("ui") / "flexlock-demo"
    store = f"sqlite:///{root}/mlflow.db"
    with ExitStack() as stack:
        prefect, api_url = local.start_prefect_server(root / "prefect", ui=True)  # as the demo starts it
        stack.callback(prefect.stop)
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("PREFECT_API_URL", api_url)
        patch.setenv("MLFLOW_TRACKING_URI", store)
        stack.enter_context(prefect_client_pointed_at(api_url))
        # Like `demo --keep`, the served deployments outlive the demo (here: until the module ends).
        # Stopped at once, Prefect 3.9's runner may cancel the diag run it has just completed.
        serve = local.served_deployments
        patch.setattr(local, "served_deployments", lambda *a, **kw: nullcontext(stack.enter_context(serve(*a, **kw))))
        result = run_demo(root)

        mlflow, mlflow_url = start_mlflow_server(
            root / "mlflow-ui", artifacts_destination=(root / "mlflow-artifacts").as_uri(), backend_store_uri=store
        )
        stack.callback(mlflow.stop)
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        # with the example's diag body, as the pipeline's relog-all relogs: it reuses the model's version
        [relogged] = relog([result.save_dir], force=True, diag=log_example_run)
        assert relogged.outcome == "relogged" and relogged.superseded_run_ids == [result.mlflow_run_id]

        client = MlflowClient(mlflow_url)
        experiment_id = client.get_experiment_by_name(DEMO_EXPERIMENT).experiment_id
        active = {run.info.run_id for run in client.search_runs([experiment_id], ACTIVE_FILTER)}
        assert active == {relogged.run_id}
        main_run = flow_run(RunLock.load(result.save_dir).prefect.flow_run_id)
        [diag_run] = wait_for_flow_runs(DIAG_DEPLOYMENT, 1)
        assert main_run.state.is_completed() and diag_run.state.is_completed()

        shots = tmp_path_factory.mktemp("ui-shots")
        print(f"\nscreenshots of the UIs in {shots}")
        yield Demo(
            prefect_ui=result.prefect_ui,
            save_dir=result.save_dir,
            main_run=main_run,
            diag_run=diag_run,
            mlflow_ui=mlflow_url,
            experiment_id=experiment_id,
            active_run_ids=active,
            deprecated_run_ids={result.mlflow_run_id},
            shots=shots,
            prefect_server_log=prefect.log_path,
        )


@dataclass(frozen=True)
class Promotion:
    version: str
    flow_run_id: str  # paused for approval until a test answers it
    evidence: Artifact
    result: Future[str]  # what the promote flow returns


@pytest.fixture(scope="module")
def promotion(demo: Demo) -> Iterator[Promotion]:
    """The relogged run's model version moved to dev, then promoted to staging with `RULE` in a
    thread (in this context: the demo's Prefect API and MLflow server), once that promotion has
    paused for approval. Whatever is still paused when the module ends is rejected, so no paused
    run and no thread outlives the module."""
    from mlflow import MlflowClient

    from flexlock_prefect.promote import promote
    from flexlock_prefect.registry import move
    from tests.helpers.prefect_api import artifacts, poll, wait_for_flow_run

    [version] = [v.version for v in MlflowClient().search_model_versions(f"name='{MODEL}'")]  # the relog reused it
    move(MODEL, version, "dev", by="ana")  # not through promote: its evidence would share the key
    key = f"promotion-{MODEL}-{version}"
    with ThreadPoolExecutor(1, thread_name_prefix="promote") as pool:
        result = pool.submit(
            copy_context().run, promote, MODEL, version, to="staging", checks=[RULE], timeout=300, poll_interval=1
        )
        try:
            found, _ = poll(lambda: artifacts(key), lambda versions: bool(versions) or result.done(), timeout_s=60)
            assert not result.done(), _ended_early(result)
            assert found, f"no evidence {key} within 60 s"
            [evidence] = found
            run = wait_for_flow_run(str(evidence.flow_run_id), lambda run: run.state.is_paused() or result.done())
            assert not result.done(), _ended_early(result)
            yield Promotion(version, str(run.id), evidence, result)
        finally:
            _, done = poll(lambda: _rejected_unless_done(key, result), bool, timeout_s=60)
            assert done, "the promotion is still running"


def _ended_early(promotion: Future[str]) -> str:
    return f"the promotion ended before it paused for approval: {promotion.exception() or promotion.result()!r}"


def _rejected_unless_done(evidence_key: str, promotion: Future[str]) -> bool:
    """Whether the promotion has ended; if not, reject the runs that published `evidence_key` and wait for approval."""
    from flexlock_prefect.approval import answer
    from flexlock_prefect.exceptions import FlexlockError
    from tests.helpers.prefect_api import artifacts

    if promotion.done():
        return True
    for artifact in artifacts(evidence_key):
        with suppress(FlexlockError):  # it is not paused (it runs, or has ended)
            answer(str(artifact.flow_run_id), approved=False, reviewer="tests", comment="the tests ended", wait_s=0)
    return False


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A fresh browser per test: no UI state (MLflow keeps view settings in local storage) carries over."""
    with chromium(tmp_path / "chromium") as browser_page:
        yield browser_page


def test_the_printed_prefect_url_shows_the_demos_flow_runs(demo: Demo, page: Page) -> None:
    page.goto(f"{demo.prefect_ui}/runs")
    for run in (demo.main_run, demo.diag_run):
        page.wait_for_element(f"the flow run {run.name}", f'a[href="/runs/flow-run/{run.id}"]')
    page.wait_for_text(demo.main_run.name, demo.diag_run.name, "Completed")
    page.screenshot(demo.shots / "prefect-runs.png")
    assert "Can't connect to Server API" not in page.text()


def test_the_run_lock_artifact_page_renders_its_tables(demo: Demo, page: Page) -> None:
    from flexlock_prefect.artifacts import artifact_key
    from tests.helpers.prefect_api import artifacts

    [artifact] = artifacts(artifact_key(demo.save_dir))
    expected = markdown_tables(artifact.data)
    assert len(expected) >= 4  # run, config, code, data, environment

    page.goto(f"{demo.prefect_ui}/artifacts/artifact/{artifact.id}")
    page.wait_for("the run.lock tables", f"document.querySelectorAll('table').length >= {len(expected)}")
    rendered = page.tables()
    page.screenshot(demo.shots / "prefect-run-lock-artifact.png")
    assert rendered == expected


def test_the_flow_runs_artifacts_tab_lists_the_run_lock(demo: Demo, page: Page) -> None:
    from flexlock_prefect.artifacts import artifact_key

    # `?tab=Artifacts` is rewritten to `?tab=Logs` while the flow run loads (Prefect 3.8, 3.9): click the tab.
    page.goto(f"{demo.prefect_ui}/runs/flow-run/{demo.main_run.id}")
    page.wait_for_element("the Artifacts tab", "li.p-tab#artifacts")
    page.click("li.p-tab#artifacts")
    page.wait_for_text(artifact_key(demo.save_dir), artifact_key(demo.save_dir, "run-data"))
    page.screenshot(demo.shots / "prefect-flow-run-artifacts.png")


def test_the_mlflow_run_list_shows_the_active_and_the_deprecated_run(demo: Demo, page: Page) -> None:
    page.goto(f"{demo.mlflow_ui}/#/experiments/{demo.experiment_id}/runs")
    every_run = demo.active_run_ids | demo.deprecated_run_ids
    listed = listed_runs(page, demo.experiment_id, len(every_run))
    page.screenshot(demo.shots / "mlflow-runs-all.png")
    assert listed == every_run


def test_the_mlflow_active_filter_lists_exactly_the_active_runs(demo: Demo, page: Page) -> None:
    page.goto(f"{demo.mlflow_ui}/#/experiments/{demo.experiment_id}/runs?searchFilter={quote(ACTIVE_FILTER)}")
    listed = listed_runs(page, demo.experiment_id, len(demo.active_run_ids))
    page.screenshot(demo.shots / "mlflow-runs-active.png")
    assert listed == demo.active_run_ids and not listed & demo.deprecated_run_ids


def test_the_approval_form_opens_undecided_links_the_evidence_and_resumes_with_the_reviewers_answer(
    demo: Demo, promotion: Promotion, page: Page
) -> None:
    from flexlock_prefect.registry import history
    from tests.helpers.prefect_api import flow_run

    page.goto(f"{demo.prefect_ui}/runs/flow-run/{promotion.flow_run_id}")
    page.click_button("Resume")
    page.wait_for_text("Resume Flow Run", f"Move {MODEL} version {promotion.version}: dev → staging.", "Decision")
    form = ".p-modal__body"
    links = page.evaluate(f"[...document.querySelectorAll('{form} a')].map(a => a.getAttribute('href'))")
    labels = page.evaluate(
        f"[...document.querySelectorAll('{form} .schema-form-property__label')].map(l => l.innerText)"
    )
    decision = f"{form} .schema-form-property:nth-of-type(1) select:not(.p-native-select__control--placeholder)"
    choice = page.evaluate(
        f"(s => [s.selectedIndex, [...s.options].map(o => o.value)])(document.querySelector('{decision}'))"
    )
    page.screenshot(demo.shots / "approval-form.png")
    assert links == [f"{demo.prefect_ui}/artifacts/artifact/{promotion.evidence.id}"]
    assert labels == ["Decision", "Reviewer", "Comment (Optional)"]
    assert choice == [-1, ["approve", "reject"]]  # nothing chosen

    required = ["'decision' is a required property", "'reviewer' is a required property"]
    page.click_button("Submit")  # as it opened: refused by the form, the run stays paused
    page.wait_for_text(*required)
    assert flow_run(promotion.flow_run_id).state.is_paused()

    # The reviewer's answer. Filled right after the form renders, a value was lost in about every
    # other run (Prefect 3.8.8); once it has shown its errors the form re-validates each change,
    # so it says when it holds both.
    page.fill(decision, "approve")
    page.fill(f"{form} .schema-form-property:nth-of-type(2) textarea", "bo")
    page.wait_for(
        "the form accepting the answer", f"!{json.dumps(required)}.some(t => document.body.innerText.includes(t))"
    )
    # Prefect's toast says whether the server took the answer. Its SQLite database may refuse the
    # resume ("database is locked": the state write raced one of the server's own writers, seen on a
    # loaded machine); the form then stays open with the answer in it, and the reviewer submits again.
    toasts = json.dumps(["Flow run resumed", "Failed to resume flow run"])
    for _ in range(3):
        page.click_button("Submit")
        toast = page.wait_for("Prefect's toast", f"{toasts}.find(t => document.body.innerText.includes(t))")
        if toast == "Flow run resumed":
            break
        assert "database is locked" in demo.prefect_server_log.read_text(errors="replace"), toast
        page.wait_for("the failure toast to close", f"!document.body.innerText.includes({json.dumps(toast)})")
    assert toast == "Flow run resumed"
    assert promotion.result.result(timeout=60) == f"models:/{MODEL}@staging"
    assert (promotion.version, "dev", "staging", "bo") in [
        (m.version, m.from_state, m.to_state, m.by) for m in history(MODEL)
    ]


def test_the_promotion_evidence_page_renders_its_tables(demo: Demo, promotion: Promotion, page: Page) -> None:
    expected = markdown_tables(promotion.evidence.data)
    page.goto(f"{demo.prefect_ui}/artifacts/artifact/{promotion.evidence.id}")
    page.wait_for("the evidence tables", f"document.querySelectorAll('table').length >= {len(expected)}")
    rendered = page.tables()
    links = page.evaluate("[...document.querySelectorAll('table a')].map(a => [a.innerText, a.getAttribute('href')])")
    page.screenshot(demo.shots / "evidence.png")
    [registered] = demo.deprecated_run_ids  # the demo's diag registered the version; the relog reused it
    [active] = demo.active_run_ids
    assert rendered == expected
    versions, checks, metrics = rendered[:3]
    assert versions[1:] == [
        ["candidate", promotion.version, registered],
        ["its save_dir's active run (same run.lock, relogged)", "", active],
    ]
    assert links == [
        [run_id, f"{demo.mlflow_ui}/#/experiments/{demo.experiment_id}/runs/{run_id}"]
        for run_id in (registered, active)
    ]
    assert [row[:2] for row in checks[1:]] == [["✅", "record"], ["✅", RULE]]
    assert metrics[0] == ["metric", "candidate", "holder", "delta"] and "accuracy" in [row[0] for row in metrics]


def test_the_evidence_draws_the_candidates_provenance_as_a_flowchart(
    demo: Demo, promotion: Promotion, page: Page
) -> None:
    """Prefect's V2 UI (`/v2`, the default entry of Prefect 3.8) renders Mermaid blocks; V1 shows their text."""
    flowchart = "svg[aria-roledescription^=flowchart]"
    page.goto(f"{demo.prefect_ui}/v2/artifacts/artifact/{promotion.evidence.id}")
    page.wait_for("the provenance flowchart", f"document.querySelectorAll('{flowchart}').length")
    drawn = page.evaluate(f"document.querySelector('{flowchart}').textContent")
    page.evaluate(f"document.querySelector('{flowchart}').scrollIntoView({{block: 'center'}})")
    page.screenshot(demo.shots / "evidence-provenance.png")
    [registered], [active] = demo.deprecated_run_ids, demo.active_run_ids
    for label in (f"{MODEL} version {promotion.version}", f"MLflow run {registered}", f"active MLflow run {active}"):
        assert label in drawn, label


def listed_runs(page: Page, experiment_id: str, count: int) -> set[str]:
    """The run ids the MLflow run list links to, once it says it matched `count` runs and shows them
    (the count is rendered before the rows)."""
    links = f"[...document.querySelectorAll('a[href^=\"#/experiments/{experiment_id}/runs/\"]')]"
    listed = page.wait_for(
        f"{count} matching runs",
        f"document.body.innerText.includes('{count} matching run') && {links}.length === {count}"
        f" && {links}.map(a => a.getAttribute('href').split('/').pop())",
    )
    return set(listed)


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """The cells of each table of a markdown text, header row first, as a browser shows them
    (code without its backticks, a link as its text)."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(\s*-+\s*\|)+", line):
            if not previous.startswith("|"):
                tables.append([])
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            tables[-1].append([_shown(cell) for cell in cells])
        previous = line
    return tables


def _shown(cell: str) -> str:
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell.strip().strip("`").replace("\\|", "|"))
