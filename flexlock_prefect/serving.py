"""The project's deployments in one place: names, entrypoints, schedules and triggers.

`deployments/serve.py` serves them from one process; `deployments/prefect.yaml` declares the
same for `prefect deploy` to a process work pool, and a test checks that the two agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint

from flexlock_prefect.events import diag_trigger, relog_trigger


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    description: str
    cron: str | None = None
    triggers: tuple[DeploymentEventTrigger, ...] = field(default_factory=tuple)


TRAIN_CRON = "0 2 * * *"

DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec("train", "flows/train.py:train", "Example main flow, nightly.", cron=TRAIN_CRON),
    DeploymentSpec(
        "diag",
        "flows/diag.py:diag",
        "Log a completed run to MLflow (fired by flexlock.run.completed).",
        triggers=(diag_trigger(),),
    ),
    DeploymentSpec(
        "relog-all",
        "flows/diag.py:relog_all",
        "Relog every run under a root (fired by flexlock.relog.requested).",
        triggers=(relog_trigger(),),
    ),
    DeploymentSpec("promote", "flows/promote.py:promote", "Approval-gated promotion through the registry aliases."),
)


def runner_deployments(project_root: Path, specs: Sequence[DeploymentSpec] = DEPLOYMENTS) -> list[RunnerDeployment]:
    """The specs as deployments served from `project_root` (entrypoints are relative to it)."""
    os.chdir(project_root)
    return [
        load_flow_from_entrypoint(spec.entrypoint).to_deployment(
            name=spec.name, description=spec.description, cron=spec.cron, triggers=list(spec.triggers)
        )
        for spec in specs
    ]


def serve_project(project_root: Path) -> None:
    """Serve every deployment until interrupted (Ctrl-C stops the runner and its flow runs)."""
    serve(*runner_deployments(project_root), print_starting_message=True)
