"""Approval-gated promotion: automatic checks, an evidence report, a human decision, then the move.

`promote(model, version, to)` is a Prefect flow:
1. the move must be legal (`registry.check_move`);
2. automatic checks: the version's MLflow run is the `active` run of its save_dir, its run.lock
   still verifies against the digest MLflow recorded, and every metric rule holds
   (`accuracy >= 0.9`, `accuracy >= prod.accuracy - 0.01`);
3. an evidence report (markdown artifact): candidate vs the current holder of the target alias,
   metric by metric, and their config, code and data differences;
4. a person approves or rejects through Prefect's pause/resume with the `Approval` input (UI, or
   `flexlock-prefect approve`); moves to `dev` and `archived` may skip it, moves to `prod` never;
5. on approval the move (serialised per model), audit tags and `flexlock.model.promoted`; on
   rejection, a failed check or a timeout nothing in the registry changes and
   `flexlock.model.rejected` says why.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from flexlock_prefect.compare import diff_locks
from flexlock_prefect.concurrency import model_lock
from flexlock_prefect.events import MODEL_PROMOTED, MODEL_REJECTED, emit_model_event
from flexlock_prefect.exceptions import FlexlockError, LifecycleError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.settings import get_settings
from flexlock_prefect.tracking import registry
from flexlock_prefect.tracking.tags import ACTIVE, LOCK_DIGEST, LOGICAL_RUN_ID, STATUS
from flexlock_prefect.verify import verify_lock

NEVER_UNAPPROVED = ("staging", "prod")
_RULE = re.compile(r"^\s*([\w.\-/]+)\s*(>=|<=|>|<|==)\s*(?:(\w+)\.([\w.\-/]+)\s*([+-])\s*)?([-+]?\d+(?:\.\d+)?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


class Approval(RunInput):
    """What a reviewer answers when a promotion pauses for approval."""

    approved: bool
    reviewer: str
    comment: str = ""


class PromotionRejected(FlexlockError):
    """A promotion was refused: a failed check, a reviewer's rejection or an approval timeout."""


@dataclass(frozen=True)
class Candidate:
    model: str
    version: str
    run_id: str
    metrics: dict[str, float]
    lock: RunLock | None


def check_rules(rules: list[str], candidate: Candidate, holders: dict[str, Candidate]) -> list[str]:
    """The rules that do not hold, each as a sentence; `prod.accuracy` means the prod holder's metric."""
    failures = []
    for rule in rules:
        match = _RULE.match(rule)
        if not match:
            raise LifecycleError(
                f"cannot read the check {rule!r}: write `metric >= 0.9` or `metric >= prod.metric - 0.01`"
            )
        metric, op, alias, other, sign, number = match.groups()
        if metric not in candidate.metrics:
            failures.append(f"{rule}: version {candidate.version} has no metric {metric!r}")
            continue
        bound = float(number)
        if alias:
            holder = holders.get(alias)
            if holder is None:
                continue  # nothing in that state yet: the relative rule has nothing to compare with
            if other not in holder.metrics:
                failures.append(f"{rule}: the {alias} version {holder.version} has no metric {other!r}")
                continue
            bound = holder.metrics[other] + (bound if sign == "+" else -bound)
        if not _OPERATORS[op](candidate.metrics[metric], bound):
            failures.append(f"{rule}: {metric} is {candidate.metrics[metric]:g}, needs {op} {bound:g}")
    return failures


def _candidate(client: MlflowClient, model: str, version: str) -> Candidate:
    model_version = client.get_model_version(model, version)
    run = client.get_run(model_version.run_id)
    save_dir = run.data.tags.get(LOGICAL_RUN_ID)
    lock = RunLock.load(save_dir) if save_dir else None
    return Candidate(model, version, run.info.run_id, dict(run.data.metrics), lock)


def _automatic_checks(
    client: MlflowClient, candidate: Candidate, rules: list[str], holders: dict[str, Candidate]
) -> list[str]:
    run = client.get_run(candidate.run_id)
    failures = []
    if run.data.tags.get(STATUS) != ACTIVE:
        failures.append(f"run {candidate.run_id} is not the active flexlock run of its save_dir (relogged since?)")
    if candidate.lock is None:
        failures.append(f"run {candidate.run_id} was not logged from a flexlock run record")
    else:
        expected = run.data.tags.get(LOCK_DIGEST)
        failures += [str(m) for m in verify_lock(candidate.lock, expected_digest=expected)]
    return failures + check_rules(rules, candidate, holders)


def evidence_markdown(candidate: Candidate, holder: Candidate | None, to: str, failures: list[str]) -> str:
    title = f"# Promotion of {candidate.model} version {candidate.version} to `{to}`"
    lines = [title, "", "## Automatic checks", ""]
    lines += [f"- ❌ {f}" for f in failures] or ["- ✅ active flexlock run, run.lock verifies, metric rules hold"]
    lines += ["", f"## Metrics: candidate vs {to} holder ({f'version {holder.version}' if holder else 'none'})", ""]
    lines += ["| metric | candidate | holder | delta |", "|---|---|---|---|"]
    for name in sorted(candidate.metrics | (holder.metrics if holder else {})):
        mine, theirs = candidate.metrics.get(name), holder.metrics.get(name) if holder else None
        delta = f"{mine - theirs:+.4g}" if mine is not None and theirs is not None else ""
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
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


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
    `FLEXLOCK_APPROVAL_POLL_INTERVAL_S`.
    """
    settings = get_settings()
    timeout = timeout or settings.approval_timeout_s
    poll_interval = poll_interval or settings.approval_poll_interval_s
    logger = get_run_logger()
    client = MlflowClient()
    version = str(version)
    origin = registry.check_move(model, version, to, client)
    candidate = _candidate(client, model, version)
    holders = {}
    for alias in registry.STATES:
        holder_version = registry.alias_holder(client, model, alias)
        if holder_version and holder_version != version:
            holders[alias] = _candidate(client, model, holder_version)
    failures = _automatic_checks(client, candidate, list(checks or []), holders)
    create_markdown_artifact(
        markdown=evidence_markdown(candidate, holders.get(to), to, failures),
        key=f"promotion-{re.sub(r'[^a-z0-9-]+', '-', model.lower())}-{version}",
        description=f"evidence for {model} v{version} → {to}",
    )

    def reject(comment: str, by: str | None = None) -> PromotionRejected:
        emit_model_event(MODEL_REJECTED, model, version, origin, to, by, comment)
        return PromotionRejected(f"promotion of {model} version {version} to {to} refused: {comment}")

    if failures:
        raise reject("failed checks: " + "; ".join(failures), "checks")
    if approval or to in NEVER_UNAPPROVED:
        logger.info(
            "waiting for approval of %s v%s → %s: approve in the UI or with `flexlock-prefect approve %s`",
            model,
            version,
            to,
            flow_run.id,
        )
        try:
            answer = pause_flow_run(wait_for_input=Approval, timeout=timeout, poll_interval=poll_interval)
        except Exception as exc:  # FlowPauseTimeout: nobody answered in time
            raise reject(f"no approval within {timeout} s") from exc
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
