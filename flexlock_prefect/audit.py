"""The registry audit on the Prefect side: each model audited under its lock, with
`flexlock.model.drift` on findings, and the `registry-audit` flow a pipeline schedules daily.

The audit itself is `flexlock_prefect.tracking.audit` (MLflow only): do the aliases, lifecycle
tags and approvals agree with the lifecycle history? Here it takes the model's Prefect lock
(`concurrency.model_lock`, which promotions hold while they move), so it never reads a move
half done, and announces what it found.

A scheduled audit that finds drift ends **Completed**: its artifact lists the findings and the
`flexlock.model.drift` event is what an automation hangs a notification on. A Failed run means
the audit itself could not run (MLflow unreachable, a model it could not read), which is a
different alarm; a run Failed for drift would hide that one.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flexlock_prefect.artifacts import markdown_table
from flexlock_prefect.concurrency import model_lock, prefect_api_configured
from flexlock_prefect.credentials import mlflow_credentials
from flexlock_prefect.events import emit_model_drift
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.report import Table, audit_failures, audit_table, counted
from flexlock_prefect.tracking.audit import AGREES, Finding, audit, managed_models

__all__ = ["audit_model", "audit_markdown", "registry_audit"]

ARTIFACT_KEY = "registry-audit"


def audit_model(model: str, repair: bool = False) -> list[Finding]:
    """Audit `model` (with `repair`, realign it) under its Prefect lock, and emit
    `flexlock.model.drift` with the findings when there are any.

    Without a Prefect API (`PREFECT_API_URL` unset: the CLI on a laptop) it audits all the
    same, without a lock to wait on and without an event.
    """
    findings = audit(model, repair=repair, serialize=model_lock)
    if findings and prefect_api_configured():
        emit_model_drift(model, [finding.to_dict() for finding in findings])
    return findings


def audit_markdown(findings: dict[str, list[Finding]], failures: dict[str, str], repair: bool = False) -> str:
    """The audit artifact: every finding of every audited model, and the models that could not be audited."""
    found = [finding for model_findings in findings.values() for finding in model_findings]
    lines = ["# Registry audit", ""]
    if found:
        lines.append(markdown_table(audit_table(found, list(findings), repair)))
    else:
        lines.append(f"{counted(len(findings), 'model')} audited: {AGREES}.")
    if failures:
        lines += ["", markdown_table(Table("Not audited", ("model", "why"), list(failures.items())))]
    return "\n".join(lines) + "\n"


@flow(name="registry-audit", log_prints=True)
def registry_audit(models: list[str] | None = None, repair: bool = False) -> list[Finding]:
    """Audit registered models (default: every model flexlock manages, i.e. with a version
    that carries a lifecycle tag); with `repair`, realign their aliases and lifecycle tags
    (never an approval). Publishes the `registry-audit` markdown artifact, emits
    `flexlock.model.drift` per model with findings, and returns every finding.

    Findings leave the run Completed (see the module's docstring). A model that cannot be
    audited does not stop the others: once all are done and the artifact is published, the run
    ends Failed naming it.
    """
    logger = get_run_logger()
    findings: dict[str, list[Finding]] = {}
    failures: dict[str, str] = {}
    with mlflow_credentials():
        for model in managed_models() if models is None else models:
            try:
                findings[model] = audit_model(model, repair)
            except FlexlockError as exc:
                failures[model] = str(exc)
                logger.error("%s: not audited: %s", model, exc)
    found = [finding for model_findings in findings.values() for finding in model_findings]
    unresolved = [finding for finding in found if not finding.repaired]
    create_markdown_artifact(
        markdown=audit_markdown(findings, failures, repair),
        key=ARTIFACT_KEY,
        description=f"registry audit: {counted(len(findings), 'model')}, {counted(len(found), 'finding')}, "
        f"{len(unresolved)} unresolved",
    )
    for finding in found:
        print(f"{'repaired: ' if finding.repaired else ''}{finding.model} [{finding.kind}] {finding.message}")
    print(f"{counted(len(findings), 'model')} audited: {counted(len(found), 'finding')}, {len(unresolved)} unresolved")
    if message := audit_failures(list(failures), len(findings) + len(failures)):
        raise FlexlockError(message)
    return found
