"""Pure capture of a run's inputs: one ordered list of facets, collected by `capture_run`.

Each facet (config, code, data, environment, lineage) is a small unit in a module of its own
with one entry point (`FACET`, see `facet.py`). `capture_run` runs them in the order of `FACETS`
and assembles the run.lock; `locked_flow` calls the same `capture_run` with a `step` that runs
each facet as a Prefect task of the facet's name. Adding a facet: write its module, add it to
`FACETS` and its section to `RunLock`. Nothing here knows Prefect or MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from flexlock_prefect.capture import config as config_facet
from flexlock_prefect.capture import data as data_facet
from flexlock_prefect.capture import env as env_facet
from flexlock_prefect.capture import git as code_facet
from flexlock_prefect.capture import lineage as lineage_facet
from flexlock_prefect.capture.config import ConfigSource
from flexlock_prefect.capture.data import data_inputs
from flexlock_prefect.capture.facet import (
    Capture,
    CaptureRequest,
    Facet,
    FlowRunRef,
    ProgressFactory,
    Step,
    run_directly,
)
from flexlock_prefect.lock import PrefectState, RunLock
from flexlock_prefect.settings import FlexlockSettings, get_settings

__all__ = ["FACETS", "CaptureRequest", "Facet", "FlowRunRef", "Step", "capture_run", "data_inputs"]

FACETS: tuple[Facet, ...] = (
    config_facet.FACET,
    code_facet.FACET,
    data_facet.FACET,
    env_facet.FACET,
    lineage_facet.FACET,
)
"""The steps of every capture, in order: later facets read what earlier ones gathered."""


def capture_run(
    config: ConfigSource,
    *,
    overrides: Sequence[str] = (),
    partial: Mapping[str, Any] | None = None,
    save_dir: str | None = None,
    data: Sequence[str] = (),
    repos: Mapping[str, str | os.PathLike[str]] | None = None,
    flow_run: FlowRunRef | None = None,
    settings: FlexlockSettings | None = None,
    progress: ProgressFactory | None = None,
    step: Step = run_directly,
) -> tuple[DictConfig, RunLock]:
    """Resolve the config and capture code, data and environment into a new (unsaved) RunLock.

    Returns the resolved config, with secrets intact for the compute, and the record, with
    secrets redacted. With `flow_run`, the record's `prefect` section names that flow run and
    holds its parameters (`overrides` and `partial`), redacted.

    Example:
        >>> cfg, lock = capture_run("conf.yaml", overrides=["lr=0.1"], data=["input_data"],
        ...                         repos={"code": "."})  # doctest: +SKIP
        >>> lock.save()  # doctest: +SKIP
    """
    request = CaptureRequest(
        config=config,
        overrides=tuple(overrides),
        partial=dict(partial or {}),
        save_dir=save_dir,
        data=tuple(data),
        repos=dict(repos or {}),
        settings=settings or get_settings(),
        progress=progress,
        flow_run=flow_run,
    )
    capture = Capture(request)
    for facet in FACETS:
        step(facet, capture)
    lock = RunLock.create(
        save_dir=str(capture.config.save_dir),
        prefect=_prefect_section(request),
        **capture.sections,
    )
    return capture.config, lock


def _prefect_section(request: CaptureRequest) -> PrefectState | None:
    if request.flow_run is None:
        return None
    redactor = request.redactor
    return PrefectState(
        flow_run_id=request.flow_run.flow_run_id,
        flow_name=request.flow_run.flow_name,
        deployment_name=request.flow_run.deployment_name,
        parameters={
            "overrides": redactor.redact_overrides(request.overrides),
            "config": redactor.redact(request.partial),
        },
    )
