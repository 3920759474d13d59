"""`Pipeline`: a user's main flow and its diag, with relog-all, promotion and the registry
audit, as deployments.

One pipeline is up to five deployments, each named after the pipeline (the main flow's name
unless `name=` says otherwise), so that several pipelines live side by side on one server:

- `<main>/<pipeline>`: the main flow, by hand or on `cron`;
- `<diag>/<pipeline>`: the diag flow, on each `flexlock.run.completed` of *this* main flow
  (`diag_trigger(main)`);
- `relog-all/<pipeline>`: `flexlock_prefect.diag.relog_all` with this diag, on each
  `flexlock.relog.requested` addressed to this pipeline (`relog_trigger(main)`);
- `promote/<pipeline>`: `flexlock_prefect.promote.promote`, by hand or `flexlock-prefect
  promote` (with `promote=True`);
- `registry-audit/<pipeline>`: `flexlock_prefect.audit.registry_audit` daily (`AUDIT_CRON`),
  which audits every model flexlock manages and emits `flexlock.model.drift` on findings
  (with `audit=True`; by default whenever `promote=True`: what promotes should be audited).

`to_deployments()` gives them for `prefect.serve`, `to_prefect_yaml()` for `prefect deploy`
(what `flexlock-prefect init` writes); both come from `_specs`, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner
from prefect.types.entrypoint import EntrypointType

from flexlock_prefect._user_flow import bound_name
from flexlock_prefect.audit import registry_audit
from flexlock_prefect.diag import diag_spec, relog_all
from flexlock_prefect.events import diag_trigger, relog_trigger
from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.promote import promote as promote_flow
from flexlock_prefect.warm import flow_modules, warm_flow_runs

DEFAULT_QUEUE = "default"
"""The work queue of a pool that main runs go to (a work pool's own first queue)."""
DIAG_QUEUE = "diag"
"""The work queue of a pool that diag, relog-all, promote and audit runs go to (served first)."""
TAGS = ("flexlock",)
AUDIT_CRON = "0 6 * * *"
"""When the registry-audit deployment runs: daily, early (UTC), so drift is news at the start of a day."""


@dataclass(frozen=True)
class _Spec:
    """One deployment of a pipeline, before it is built for `serve` or written for `deploy`."""

    flow: Flow[..., Any]
    entrypoint: str
    description: str
    queue: str
    cron: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    triggers: tuple[DeploymentEventTrigger, ...] = ()

    @property
    def module_path(self) -> bool:
        return ":" not in self.entrypoint


@dataclass(frozen=True)
class Pipeline:
    """A main flow and its diag flow (and optionally promotion) deployed as one.

    Args:
        main: a `locked_flow`.
        diag: a `diag_flow`: its trigger fires on `main`'s completed runs only.
        promote: also deploy the approval-gated promotion flow for this pipeline.
        cron: a schedule for the main flow.
        name: the deployments' name (default: the main flow's name).
        audit: also deploy the daily registry audit (default: when `promote`). It audits every
            model flexlock manages, not only this pipeline's: of several pipelines on one
            server, let one deploy it (`audit=False` on the others) or each reports the same drift.

    Example:
        >>> Pipeline(main=train, diag=diag, promote=True).serve()  # doctest: +SKIP
        >>> prefect.serve(*Pipeline(train, diag).to_deployments(), *Pipeline(train_b, diag_b).to_deployments())
        ... # doctest: +SKIP
    """

    main: Flow[..., Any]
    diag: Flow[..., Any]
    promote: bool = False
    cron: str | None = None
    name: str | None = None
    audit: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.main, Flow):
            raise FlexlockError(f"Pipeline main must be a locked_flow, got {self.main!r}")
        if not isinstance(self.diag, Flow):
            raise FlexlockError(f"Pipeline diag must be a diag_flow, got {self.diag!r}")
        diag_spec(self.diag)  # refuses a flow that is not a diag_flow

    @property
    def deployment_name(self) -> str:
        return self.name or self.main.name

    def to_deployments(self) -> list[RunnerDeployment]:
        """The deployments, for `prefect.serve(*pipeline.to_deployments(), …)`."""
        return [self._deployment(spec) for spec in self._specs(Path.cwd())]

    def serve(self, *, warm: bool = True, preload: Sequence[str] = (), **serve_kwargs: Any) -> None:
        """Serve this pipeline's deployments until interrupted: `serve_pipelines(self, ...)`."""
        serve_pipelines(self, warm=warm, preload=preload, **serve_kwargs)

    def _deployment(self, spec: _Spec) -> RunnerDeployment:
        return spec.flow.to_deployment(**self._deployment_options(spec))

    def to_prefect_yaml(self, project_root: str | os.PathLike[str], pool: str) -> list[dict[str, Any]]:
        """The `deployments:` entries of a prefect.yaml run from `project_root` with work pool `pool`:
        main runs on the pool's default queue, the rest on its `diag` queue."""
        entries = []
        for spec in self._specs(Path(project_root)):
            entry: dict[str, Any] = {
                "name": self.deployment_name,
                "entrypoint": spec.entrypoint,
                "description": spec.description,
                "tags": list(TAGS),
                "work_pool": {"name": pool, "work_queue_name": spec.queue},
            }
            if spec.parameters:
                entry["parameters"] = spec.parameters
            if spec.cron:
                entry["schedules"] = [{"cron": spec.cron}]
            if spec.triggers:
                entry["triggers"] = [trigger_yaml(t) for t in spec.triggers]
            entries.append(entry)
        return entries

    def _deployment_options(self, spec: _Spec) -> dict[str, Any]:
        """What `Flow.to_deployment` and `Runner.add_flow` take to build the deployment of `spec`."""
        return {
            "name": self.deployment_name,
            "description": spec.description,
            "cron": spec.cron,
            "parameters": spec.parameters or None,
            "triggers": list(spec.triggers),
            "tags": list(TAGS),
            "entrypoint_type": EntrypointType.MODULE_PATH if spec.module_path else EntrypointType.FILE_PATH,
        }

    def _specs(self, root: Path) -> list[_Spec]:
        diag_entrypoint = entrypoint(self.diag, root)
        name = self.deployment_name
        specs = [
            _Spec(
                self.main, entrypoint(self.main, root), f"Main flow of the {name} pipeline.", DEFAULT_QUEUE, self.cron
            ),
            _Spec(
                self.diag,
                diag_entrypoint,
                f"Log each completed run of {self.main.name} to MLflow.",
                DIAG_QUEUE,
                triggers=(diag_trigger(self.main),),
            ),
            _Spec(
                relog_all,
                module_entrypoint(relog_all),
                f"Relog every save_dir under a root with {self.diag.name} (flexlock.relog.requested for {name}).",
                DIAG_QUEUE,
                parameters={"diag": diag_entrypoint, "main": self.main.name},
                triggers=(relog_trigger(self.main),),
            ),
        ]
        if self.promote:
            specs.append(
                _Spec(
                    promote_flow,
                    module_entrypoint(promote_flow),
                    f"Approval-gated promotion of the {name} pipeline's models.",
                    DIAG_QUEUE,
                )
            )
        if self.promote if self.audit is None else self.audit:
            specs.append(
                _Spec(
                    registry_audit,
                    module_entrypoint(registry_audit),
                    "Daily audit of the registry's aliases, lifecycle tags and approvals against the lifecycle "
                    "histories (flexlock.model.drift on findings).",
                    DIAG_QUEUE,
                    AUDIT_CRON,
                )
            )
        return specs


def serve_pipelines(
    *pipelines: Pipeline,
    warm: bool = True,
    preload: Sequence[str] = (),
    queue: str | None = None,
    pause_on_shutdown: bool | None = None,
    print_starting_message: bool = True,
    limit: int | None = None,
    **runner_kwargs: Any,
) -> None:
    """Serve the deployments of several pipelines from this process until interrupted, as
    `prefect.serve(*a.to_deployments(), *b.to_deployments())` does, but warm by default.

    With `warm` (where multiprocessing has a fork server: not on Windows), the runner holds each
    deployment's flow and runs it in a fork of a process that imported Prefect's engine, the
    modules of the pipelines' flows and the modules `preload` names (the libraries a diag
    imports when it runs). The example diag's process then takes 0.1 s to start instead of
    3.7 s for an interpreter and its imports (README, Performance; `flexlock_prefect.warm`).
    Call it under `if __name__ == "__main__":`, as multiprocessing asks: each flow run imports
    the script that serves. The runner's deployments are its own, as with `Flow.serve`: one
    of the same name deployed to a work pool is taken over (its pool cleared). `warm=False` is
    `prefect.serve` itself. The other keywords are `prefect.serve`'s.

    `queue` serves only the deployments `to_prefect_yaml` puts on that work queue: `"diag"` for
    the diag, relog-all, promote and audit flows, `"default"` for the main flows. Deploy with
    prefect.yaml, then serve the `diag` queue warm beside the pool's workers: the main runs stay
    on the pool's infrastructure and every diag skips an interpreter's start (README, Scale-out).
    Several such runners may serve the same deployments (Prefect gives each run to one), so one
    of them stopping pauses no schedule: `pause_on_shutdown` defaults to `queue is None`.

    Example:
        >>> if __name__ == "__main__":  # doctest: +SKIP
        ...     serve_pipelines(Pipeline(train_a, diag_a), Pipeline(train_b, diag_b), preload=["sklearn"])
    """
    specs = _queue_specs(pipelines, queue)
    if pause_on_shutdown is None:
        pause_on_shutdown = queue is None
    if not warm or "forkserver" not in multiprocessing.get_all_start_methods():
        serve(
            *(pipeline._deployment(spec) for pipeline, spec in specs),
            pause_on_shutdown=pause_on_shutdown,
            print_starting_message=print_starting_message,
            limit=limit,
            **runner_kwargs,
        )
        return
    # Warm before the deployments exist: a run never waits behind the fork server's preloading.
    with warm_flow_runs([*flow_modules([spec.flow for _, spec in specs]), *preload]):
        runner = Runner(pause_on_shutdown=pause_on_shutdown, limit=limit, **runner_kwargs)
        for pipeline, spec in specs:
            runner.add_flow(spec.flow, **pipeline._deployment_options(spec))
        if print_starting_message:
            names = [f"{spec.flow.name}/{pipeline.deployment_name}" for pipeline, spec in specs]
            print(f"Serving {len(names)} deployments, flow runs started warm:\n  " + "\n  ".join(names), flush=True)
        try:
            asyncio.run(runner.start())
        except (KeyboardInterrupt, TerminationSignal) as exc:
            print(f"Received {type(exc).__name__}, shutting down...", flush=True)


def check_queue(queue: str | None) -> None:
    """Refuse a work queue that no pipeline deployment is on (`serve_pipelines(queue=...)`)."""
    if queue not in (None, DEFAULT_QUEUE, DIAG_QUEUE):
        raise FlexlockError(
            f"unknown work queue {queue!r}: serve {DIAG_QUEUE!r} (diag, relog-all, promote, audit) "
            f"or {DEFAULT_QUEUE!r} (the main flows), or leave it out for every deployment"
        )


def _queue_specs(pipelines: Sequence[Pipeline], queue: str | None) -> list[tuple[Pipeline, _Spec]]:
    """The pipelines' deployments, those on work queue `queue` only unless it is None."""
    check_queue(queue)
    return [
        (pipeline, spec)
        for pipeline in pipelines
        for spec in pipeline._specs(Path.cwd())
        if queue is None or spec.queue == queue
    ]


def entrypoint(flow: Flow[..., Any], root: Path) -> str:
    """Where a deployment finds `flow`: `<file relative to root>:<name>` for the user's flows, as
    Prefect writes entrypoints; the module path for flexlock-prefect's own (found wherever it is
    installed, a wheel included)."""
    if flow.fn.__module__.split(".")[0] == __name__.split(".")[0]:
        return module_entrypoint(flow)
    module = sys.modules.get(flow.fn.__module__)
    path = getattr(module, "__file__", None)
    if not path:
        raise FlexlockError(f"flow {flow.name!r} is not defined in a file: define it in a module to deploy it")
    relative = os.path.relpath(Path(path).resolve(), root.resolve())
    return f"{Path(relative).as_posix()}:{bound_name(flow)}"


def module_entrypoint(flow: Flow[..., Any]) -> str:
    """`package.module.name` of one of flexlock-prefect's own flows: found wherever it is installed."""
    return f"{flow.fn.__module__}.{bound_name(flow)}"


def trigger_yaml(trigger: DeploymentEventTrigger) -> dict[str, Any]:
    """A trigger as a prefect.yaml `triggers:` entry."""
    return {
        "type": "event",
        "name": trigger.name,
        "description": trigger.description,
        "match": trigger.match.model_dump(mode="json"),
        "expect": sorted(trigger.expect),
        "for_each": sorted(trigger.for_each),
        "parameters": trigger.parameters,
    }


def write_prefect_yaml(
    pipelines: list[Pipeline],
    path: str | os.PathLike[str],
    pool: str,
    project_root: str | os.PathLike[str] | None = None,
    header: str = "",
    name: str | None = None,
) -> Path:
    """Write a prefect.yaml for `prefect deploy --all`, run from `project_root` (default: the
    file's directory), with the pipelines' deployments; `name` is the project's (default: the
    root directory's name)."""
    target = Path(path)
    root = Path(project_root or target.resolve().parent).resolve()
    document = {
        "name": name or root.name,
        "deployments": [entry for p in pipelines for entry in p.to_prefect_yaml(root, pool)],
    }
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    target.write_text(header + text)
    return target
