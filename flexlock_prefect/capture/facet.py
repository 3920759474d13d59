"""What a capture facet is: one named step that reads what earlier steps gathered and adds its part.

The facets themselves live one per module (`config`, `git`, `data`, `env`, `lineage`) and are
listed, in order, in `flexlock_prefect.capture.FACETS`. Like MLflow's run-context providers, a
facet has one entry point and knows nothing of who runs it: `capture_run` calls it directly,
`locked_flow` runs it as a Prefect task of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flexlock_prefect.redact import Redactor
from flexlock_prefect.settings import FlexlockSettings, get_settings

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from flexlock_prefect.capture.config import ConfigSource

ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
"""`(description, total_bytes)` → a context yielding `advance(n_bytes)`."""


@dataclass(frozen=True)
class FlowRunRef:
    """The Prefect flow run a capture belongs to. Its parameters are the request's `overrides`
    and `partial`, so they are recorded from there, redacted."""

    flow_run_id: str | None
    flow_name: str | None
    deployment_name: str | None


@dataclass(frozen=True)
class CaptureRequest:
    """What one capture is asked to record.

    `partial` and `overrides` are applied in that order over `config` (with `save_dir`, when
    given, replacing the config's own save_dir template first).
    """

    config: ConfigSource
    overrides: Sequence[str] = ()
    partial: Mapping[str, Any] = field(default_factory=dict)
    save_dir: str | None = None
    data: Sequence[str] = ()
    repos: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)
    settings: FlexlockSettings = field(default_factory=get_settings)
    progress: ProgressFactory | None = None
    flow_run: FlowRunRef | None = None

    @cached_property
    def redactor(self) -> Redactor:
        return Redactor.from_settings(self.settings)


class Capture:
    """A capture in progress: the request, the resolved config once the config facet ran, and the
    run.lock sections gathered so far, by section name (`config`, `repos`, `data`, …).

    A plain class on purpose: Prefect walks task arguments that are dataclasses or mappings, and
    the resolved config and sections must reach each facet untouched.
    """

    def __init__(self, request: CaptureRequest) -> None:
        self.request = request
        self.resolved: DictConfig | None = None
        self.sections: dict[str, Any] = {}

    @property
    def config(self) -> DictConfig:
        """The resolved config, with secrets intact (what the compute gets)."""
        if self.resolved is None:
            raise RuntimeError("the config facet has not run yet: it comes first in FACETS")
        return self.resolved


@dataclass(frozen=True)
class Facet:
    """One step of a capture.

    Attributes:
        name: the step's name, e.g. `capture-code`; `locked_flow` names its Prefect task so.
        collect: reads `capture` (the request and earlier sections) and adds its section.
        retries: how often a runner that can retry (Prefect) may repeat a failed step; for
            facets that read over the network.
    """

    name: str
    collect: Callable[[Capture], None]
    retries: int = 0


Step = Callable[[Facet, Capture], None]
"""How a facet is run: `run_directly`, or a wrapper such as `locked_flow`'s Prefect task."""


def run_directly(facet: Facet, capture: Capture) -> None:
    facet.collect(capture)
