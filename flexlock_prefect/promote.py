"""Approval-gated promotion: automatic checks, an evidence report, a human decision, then the move.

`promote(model, version, to)` is a Prefect flow:
1. the move must be legal, and the flow's MLflow account allowed to make it (`registry.check_move`);
2. automatic checks: the active run of the version's save_dir was logged from the version's
   run.lock (`flexlock.lock_digest`; the version's own run, or a later relog of the same record,
   DESIGN.md §6), that run.lock still verifies against that digest, and every metric rule holds
   (`accuracy >= 0.9`, `accuracy >= prod.accuracy - 0.01`, see `flexlock_prefect.rules`). Only
   the candidate and the holders its rules name must be readable: a record that is gone is a
   failed check with its reason, never a crash;
3. an evidence report (markdown artifact): candidate vs the current holder of the target alias,
   metric by metric, and their config, code and data differences;
4. a person approves or rejects through Prefect's pause/resume with the `Approval` input (UI, or
   `flexlock-prefect approve`); moves to `dev` and `archived` may skip it, moves to `prod` never;
5. on approval the move (serialised per model), audit tags and `flexlock.model.promoted`; on
   rejection, a failed check or a timeout nothing in the registry changes and
   `flexlock.model.rejected` says why. An error while waiting (the Prefect API failing) fails the
   flow with that error, not as a timeout, and moves nothing either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities import Run
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from pydantic import Field

from flexlock_prefect import storage
from flexlock_prefect.compare import diff_locks
from flexlock_prefect.concurrency import model_lock
from flexlock_prefect.credentials import mlflow_credentials
from flexlock_prefect.events import MODEL_PROMOTED, MODEL_REJECTED, emit_model_event
from flexlock_prefect.exceptions import FlexlockError, LifecycleError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.rules import Candidate, Rule, RuleResult, check_rules, parse_rules, rule_results
from flexlock_prefect.settings import get_settings
from flexlock_prefect.trace_view import lineage_mermaid
from flexlock_prefect.tracking import model_state, registry
from flexlock_prefect.tracking.client import Tracking, check_tracking_server, run_url
from flexlock_prefect.tracking.lifecycle import NEEDS_APPROVAL
from flexlock_prefect.tracking.supersede import current_active
from flexlock_prefect.tracking.tags import ACTIVE, LOCK_DIGEST, LOGICAL_RUN_ID, STATUS
from flexlock_prefect.tracking.trace import trace
from flexlock_prefect.verify import verify_lock

__all__ = ["Approval", "Candidate", "PromotionRejected", "check_rules", "evidence_markdown", "promote"]


class Approval(RunInput):
    """What a reviewer answers when a promotion pauses for approval.

    The form starts undecided: `decision` has no default, so a form submitted unchanged is
    refused by Prefect (the input does not validate) rather than read as a rejection or an
    approval. The paused run shows it with a description of the move and a link to the evidence.
    """

    decision: Literal["approve", "reject"] = Field(
        description="approve: move the version now; reject: refuse the promotion (the registry is left as it is)"
    )
    reviewer: str = Field(description="who decides: recorded in the version's lifecycle history and audit tags")
    comment: str = Field(default="", description="why: recorded with the decision")

    @property
    def approved(self) -> bool:
        return self.decision == "approve"


class PromotionRejected(FlexlockError):
    """A promotion was refused: a failed check, a reviewer's rejection or an approval timeout."""


def load_version(tracking: Tracking, model: str, version: str) -> tuple[Candidate, Run | None]:
    """A version's metrics and run record, and its MLflow run.

    What cannot be read (the run deleted, no flexlock record, the save_dir gone, run.lock
    unreadable) is the candidate's `problem`, never an exception; an unreachable or refusing
    server still raises, since it says nothing about the version.
    """
    try:
        registered = model_state.model_version(tracking, model, version)
        run_id = registered.run_id
        if not run_id:
            return Candidate(model, version, "", {}, None, "it was registered without an MLflow run"), None
        runs = Tracking(tracking.client.tracking_uri, tracking.client)  # runs are on the tracking server
        with model_state.mlflow_errors(runs, f"MLflow run {run_id}", missing=f"its MLflow run {run_id} is gone"):
            run = tracking.client.get_run(run_id)
    except LifecycleError as exc:
        return Candidate(model, version, "", {}, None, str(exc)), None
    metrics = dict(run.data.metrics)
    save_dir = run.data.tags.get(LOGICAL_RUN_ID)
    digest = registered.tags.get(LOCK_DIGEST) or run.data.tags.get(LOCK_DIGEST)
    if run.info.lifecycle_stage == "deleted":
        return Candidate(model, version, run_id, metrics, None, f"its MLflow run {run_id} is deleted", digest), run
    if not save_dir:
        problem = f"its run {run_id} has no flexlock run record"
        return Candidate(model, version, run_id, metrics, None, problem, digest), run
    try:
        return Candidate(model, version, run_id, metrics, RunLock.load(save_dir), lock_digest=digest), run
    except FlexlockError as exc:
        gone = not _exists(save_dir)
        problem = f"its save_dir {save_dir} is gone" if gone else f"its run.lock cannot be read: {exc}"
        return Candidate(model, version, run_id, metrics, None, problem, digest), run


def _exists(url: str) -> bool:
    try:
        return storage.exists(url)
    except FlexlockError:
        return True  # cannot tell: the run.lock's own error says more


def active_run(candidate: Candidate, run: Run | None) -> Run | None:
    """The active run of the version's logical run: its own run until a relog supersedes it."""
    if run is not None and run.data.tags.get(STATUS) == ACTIVE:
        return run
    return current_active(candidate.lock) if candidate.lock else None


def holds_record(active: Run | None, candidate: Candidate) -> bool:
    """Whether `active` was logged from the version's run.lock (DESIGN.md §6): then the version is
    current, whichever relog of its save_dir made that run (one that reused the version, say)."""
    return (
        active is not None
        and bool(candidate.lock_digest)
        and active.data.tags.get(LOCK_DIGEST) == candidate.lock_digest
    )


def automatic_checks(
    candidate: Candidate, run: Run | None, holders: dict[str, Candidate], active: Run | None
) -> list[str]:
    """What stops the promotion before any rule: the candidate's run and record, and the records
    of the holders the rules compare with (the rules are `rule_results`). `active` is the
    candidate's `active_run`."""
    failures = [] if run is None or holds_record(active, candidate) else [_not_current(candidate, active)]
    if candidate.lock is None:
        failures.append(f"version {candidate.version}: {candidate.problem}")
    elif run is not None:
        failures += [str(m) for m in verify_lock(candidate.lock, expected_digest=candidate.lock_digest)]
    for alias, holder in sorted(holders.items()):
        if holder.problem:
            failures.append(f"the {alias} version {holder.version}, which the checks compare with: {holder.problem}")
    return failures


def _not_current(candidate: Candidate, active: Run | None) -> str:
    why = f"its active run {active.info.run_id} was logged from another run.lock" if active else "it has no active run"
    return (
        f"run {candidate.run_id} is not the active flexlock run of its save_dir, and {why} "
        "(relogged from a changed run.lock since?)"
    )


def evidence_markdown(
    candidate: Candidate,
    holder: Candidate | None,
    to: str,
    problems: list[str],
    rules: list[RuleResult] | None = None,
    run_links: Mapping[str, str] | None = None,
    current_run_id: str | None = None,
    provenance: str | None = None,
) -> str:
    """The evidence a reviewer reads: both versions and their MLflow runs (linked when
    `run_links` has their URL), every check with its outcome (`problems` of the records, then
    each rule), the metrics side by side, what differs in their inputs and, given as a Mermaid
    block (`trace_view.lineage_mermaid`), the candidate's `provenance`. `current_run_id` is the
    run that holds the candidate's record now, when a relog made it after the version's own."""
    links = run_links or {}

    def run_cell(run_id: str) -> str:
        if not run_id:
            return "no MLflow run"
        return f"[{run_id}]({links[run_id]})" if run_id in links else f"`{run_id}`"

    title = f"# Promotion of {candidate.model} version {candidate.version} to `{to}`"
    lines = [
        title,
        "",
        "| | version | MLflow run |",
        "|---|---|---|",
        f"| candidate | {candidate.version} | {run_cell(candidate.run_id)} |",
    ]
    if current_run_id and current_run_id != candidate.run_id:
        lines.append(f"| its save_dir's active run (same run.lock, relogged) | | {run_cell(current_run_id)} |")
    if holder:
        lines.append(f"| {to} holder | {holder.version} | {run_cell(holder.run_id)} |")
    lines += ["", "## Checks", "", "| | check | outcome |", "|---|---|---|"]
    lines += [f"| ❌ | record | {problem} |" for problem in problems] or [
        "| ✅ | record | the active flexlock run of its save_dir (or one logged from the same run.lock); "
        "run.lock verifies against the logged digest |"
    ]
    lines += [f"| {'✅' if r.holds else '❌'} | `{r.text}` | {r.detail} |" for r in rules or []]
    if not rules:
        lines.append("| ✅ | metric rules | none given |")
    if holder and holder.problem:
        lines.append(f"| ⚠️ | {to} holder | version {holder.version}: {holder.problem} (not checked; no input diff) |")
    lines += ["", f"## Metrics: candidate vs {to} holder ({f'version {holder.version}' if holder else 'none'})", ""]
    lines += ["| metric | candidate | holder | delta |", "|---|---|---|---|"]
    for name in sorted(candidate.metrics | (holder.metrics if holder else {})):
        mine, theirs = candidate.metrics.get(name), holder.metrics.get(name) if holder else None
        delta = _num(mine - theirs, sign=True) if mine is not None and theirs is not None else ""
        lines.append(f"| {name} | {_num(mine)} | {_num(theirs)} | {delta} |")
    if holder and holder.lock and candidate.lock:
        lines += [
            "",
            "## Inputs that differ (holder → candidate)",
            "",
            "| section | name | holder | candidate |",
            "|---|---|---|---|",
        ]
        for change in diff_locks(holder.lock, candidate.lock):
            lines.append(f"| {change.section} | {change.name} | {change.before or ''} | {change.after or ''} |")
    if candidate.lock:
        lines += ["", "## Data of the candidate", "", "| input | digest |", "|---|---|"]
        lines += [f"| {name} | `{d.algorithm}:{d.digest}` |" for name, d in candidate.lock.data.items()]
    if provenance:
        lines += ["", "## Provenance", "", provenance]
    return "\n".join(lines) + "\n"


def _num(value: float | None, sign: bool = False) -> str:
    """Metrics and deltas alike with four decimals, so a column reads at a glance."""
    return "" if value is None else f"{value:{'+' if sign else ''}.4f}"


def approval_form(
    model: str, version: str, origin: str | None, to: str, evidence_id: object, holder: str | None = None
) -> type[Approval]:
    """The `Approval` form with a description that says what is decided and where the evidence
    is; `holder` is the version now in `to`, which the evidence compares with."""
    ui = PREFECT_UI_URL.value()
    evidence = f"[the evidence]({ui.rstrip('/')}/artifacts/artifact/{evidence_id})" if ui else "the evidence artifact"
    compared = (
        f"checks, metrics and inputs against version {holder}, now in {to}"
        if holder
        else f"checks and metrics; no version is in {to} yet"
    )
    return Approval.with_initial_data(
        description=(
            f"**Move {model} version {version}: {origin or 'new'} → {to}.** The automatic checks passed; read "
            f"{evidence} ({compared}), then choose *approve* or *reject* and give your name. Both are recorded "
            "in the version's lifecycle history."
        )
    )


def _named(rules: list[Rule]) -> list[str]:
    return sorted({rule.alias for rule in rules if rule.alias})


def wait_for_approval(timeout: int, poll_interval: int, form: type[Approval] = Approval) -> Approval | None:
    """The reviewer's answer (on `form`, an `Approval` with its description), or None when
    nobody answered within `timeout` seconds.

    Only Prefect's pause timeout (`FlowPauseTimeout`) means that; any other error of the wait
    (the Prefect API failing, a pause refused) is raised as it is.
    """
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=poll_interval)
    except FlowPauseTimeout:
        return None


@flow(name="promote", log_prints=True)
def promote(
    model: str,
    version: str,
    to: str,
    checks: list[str] | None = None,
    approval: bool = True,
    timeout: int | None = None,
    poll_interval: int | None = None,
) -> str:
    """Promote `model` `version` to the alias `to` after checks and (for staging and prod) approval.

    `timeout` and `poll_interval` (seconds) default to `FLEXLOCK_APPROVAL_TIMEOUT_S` and
    `FLEXLOCK_APPROVAL_POLL_INTERVAL_S`. The MLflow account is the environment's, or the
    `FLEXLOCK_MLFLOW_CREDENTIALS_BLOCK` Secret's (`credentials.py`).
    """
    with mlflow_credentials():
        return _promote(model, str(version), to, checks, approval, timeout, poll_interval)


def _promote(
    model: str,
    version: str,
    to: str,
    checks: list[str] | None,
    approval: bool,
    timeout: int | None,
    poll_interval: int | None,
) -> str:
    settings = get_settings()
    timeout = timeout or settings.approval_timeout_s
    poll_interval = poll_interval or settings.approval_poll_interval_s
    logger = get_run_logger()
    rules = parse_rules(checks or [])  # a rule that cannot be read is refused before anything happens
    models = model_state.connect(MlflowClient())
    check_tracking_server(models.client.tracking_uri)  # the versions' runs are read from there
    client = models.client
    origin = registry.check_move(model, version, to, client, writes=True)  # this flow's account moves it
    candidate, run = load_version(models, model, version)
    holding = {alias: v for alias, v in registry.aliases(model, client).items() if v != version}
    # only what the checks need: the holders the rules compare with (and the target's, for the evidence)
    loaded = {alias: load_version(models, model, holding[alias]) for alias in {*_named(rules), to} if alias in holding}
    holders = {alias: found for alias, (found, _) in loaded.items() if alias in _named(rules)}
    target = loaded[to][0] if to in loaded else None
    active = active_run(candidate, run)
    problems = automatic_checks(candidate, run, holders, active)
    results = rule_results(rules, candidate, holders)
    failures = problems + [str(result) for result in results if not result.holds]
    links = {
        r.info.run_id: link
        for r in [run, active, *(r for _, r in loaded.values())]
        if r and (link := run_url(client.tracking_uri, r.info.run_id, r.info.experiment_id))
    }
    current = active.info.run_id if active and holds_record(active, candidate) else None
    provenance = lineage_mermaid(trace((model, version), client))  # what made the candidate, as a flowchart
    evidence_id = create_markdown_artifact(
        markdown=evidence_markdown(candidate, target, to, problems, results, links, current, provenance),
        key=f"promotion-{re.sub(r'[^a-z0-9-]+', '-', model.lower())}-{version}",
        description=f"evidence for {model} v{version} → {to}",
    )

    def reject(comment: str, by: str | None = None) -> PromotionRejected:
        emit_model_event(MODEL_REJECTED, model, version, origin, to, by, comment)
        return PromotionRejected(f"promotion of {model} version {version} to {to} refused: {comment}")

    if failures:
        raise reject("failed checks: " + "; ".join(failures), "checks")
    if approval or to in NEEDS_APPROVAL:
        logger.info(
            "waiting for approval of %s v%s → %s: approve in the UI or with `flexlock-prefect approve %s`",
            model,
            version,
            to,
            flow_run.id,
        )
        form = approval_form(model, version, origin, to, evidence_id, holding.get(to))
        answer = wait_for_approval(timeout, poll_interval, form)
        if answer is None:
            raise reject(f"no approval within {timeout} s")
        if not answer.approved:
            raise reject(answer.comment or "rejected", answer.reviewer)
        by, comment, approved = answer.reviewer, answer.comment, True
    else:
        by, comment, approved = "flexlock-prefect", "moved without approval by configuration", False
    moves = registry.move(
        model,
        version,
        to,
        by,
        comment,
        approved=approved,
        flow_run_id=str(flow_run.id),
        serialize=model_lock,
        client=client,
    )
    emit_model_event(MODEL_PROMOTED, model, version, origin, to, by, comment)
    print(
        f"{model} version {version}: {origin or 'new'} → {to}, approved by {by}"
        + (f"; version {moves[0].version} archived" if len(moves) > 1 else "")
    )
    return f"models:/{model}@{to}"
