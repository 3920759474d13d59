"""Warm starts for served flow runs: each run forks from a process that imported its code already.

Prefect 3.8 and 3.9 start each served flow run in a new interpreter: `python -m prefect.engine`
for a deployment given to `prefect.serve`, or a multiprocessing `spawn` of
`prefect.flow_engine.run_flow_in_subprocess` for a flow the runner holds (`Flow.serve`,
`Runner.add_flow`). Either imports Prefect's engine, then the flow's module and, for a diag,
MLflow and scikit-learn: 2 to 4 seconds of every short run, on every run. Neither version offers
another start method or a process to reuse (`RunnerSettings` has none).

`warm_flow_runs` makes the runner of this process start the runs of the flows it holds with
multiprocessing's `forkserver` instead (`serve_pipelines` gives the runner its flows for this).
The fork server is one process, started when the block is entered, that has imported Prefect's
engine and the modules given (by `serve_pipelines`: the modules of the pipelines' flows and
those `preload` names); each flow run is a fork of it. A run still
gets a process of its own, with its own memory and settings and the runner's environment (as
a spawned one has), the runner still waits on it, cancels and kills it by its pid, and its crash
stays its own. The fork server is a child of the runner: stop the runner, not the fork server
(killed alone, its running flow runs would look exited to the runner).

What it changes for the user's code: a module is imported once, when the fork server starts, not
once per run. A module that does work at import time (reads a file, opens a connection) does it
once; code edited while the runner runs is picked up when the runner restarts, as with
`Flow.serve` (a deployment given to `prefect.serve` loads its entrypoint anew for every run). A
flow run ends as multiprocessing's forked children do, without running `atexit` handlers
registered before the fork: end what must be ended (an MLflow run) in the flow itself.

Prefect offers no hook for the start method, so this replaces the name `multiprocessing` inside
`prefect.flow_engine` with a stand-in whose `get_context("spawn")` answers the fork server's
context; everything else it forwards to `multiprocessing`. The stand-in is there only inside the
block, and a test runs the served pipeline with it on both supported Prefect versions.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from prefect import Flow

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.settings import temporary_environment

ENGINE_MODULE = "prefect.flow_engine"
"""What every flow run imports first: Prefect's engine, which unpickles and runs the flow."""
FORK_SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}
"""The fork server must run no Python thread: a fork copies a lock a thread holds, never the
thread. MLflow starts its usage-telemetry threads when imported unless this says not to, so
flow runs have no telemetry client (MLflow makes it only at import). A test checks that the fork
server of the example's warm-up runs no thread but native ones that handle forks themselves."""


class _ForkServerForSpawn:
    """`multiprocessing` as `prefect.flow_engine` sees it inside `warm_flow_runs`: the same module,
    but the `spawn` context is the fork server's, whose processes get the runner's environment."""

    def __init__(self, module: ModuleType, context: multiprocessing.context.BaseContext) -> None:
        self._module = module
        self._context = _InRunnerEnvironment(context)

    def get_context(self, method: str | None = None) -> Any:
        return self._context if method == "spawn" else self._module.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class _InRunnerEnvironment:
    """A multiprocessing context whose processes start with this process's `os.environ` of the
    moment they are made, as spawned ones do, instead of the fork server's."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self._context = context

    def Process(self, target: Any, args: tuple[Any, ...] = (), **kwargs: Any) -> Any:  # noqa: N802 - its name
        return self._context.Process(target=_in_environment, args=(dict(os.environ), target, args), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _in_environment(environ: dict[str, str], target: Any, args: tuple[Any, ...]) -> Any:
    os.environ.clear()
    os.environ.update(environ)
    return target(*args)


def _report_preloaded(names: list[str], report: Any) -> None:
    """In the fork server's first child: which of `names` it failed to import."""
    report.put([name for name in names if name not in sys.modules])


def flow_modules(flows: Iterable[Flow[..., Any]]) -> list[str]:
    """The importable modules the flows' functions live in, to preload.

    Only modules this process imported already (the fork server is given this process's
    `sys.path`, so they import there too). A flow defined in a script run as `__main__` is not
    importable by name and is left out.
    """
    names = {getattr(flow.fn, "__module__", None) for flow in flows}
    return sorted(name for name in names if name and name != "__main__" and name in sys.modules)


@contextmanager
def warm_flow_runs(preload: Iterable[str] = ()) -> Iterator[None]:
    """Within the block, flow runs that this process's runner serves fork from a warm process that
    imported Prefect's engine and the modules `preload` names (see the module docstring).

    The fork server starts when the block is entered, which waits until it has imported
    everything (seconds, once), so that no flow run waits behind it. It stays for the life of
    this process; so only the first block's `preload` counts.

    It changes runs of flows the runner holds: those of `Flow.serve` and `Runner.add_flow` (and
    `serve_pipelines`). `prefect.serve(*deployments)` gives the runner deployments without their
    flows, and each run starts `python -m prefect.engine`, which loads the flow anew.

    Raises:
        FlexlockError: a module of `preload` could not be imported, the fork server died while
            importing, or its first process failed (a script that serves when imported, unguarded).

    Example:
        >>> with warm_flow_runs(["my_project.flows", "sklearn.linear_model"]):  # doctest: +SKIP
        ...     my_flow.serve(name="nightly", cron="0 2 * * *")
    """
    import prefect.flow_engine as engine

    context = multiprocessing.get_context("forkserver")
    names = [ENGINE_MODULE, *dict.fromkeys(preload)]
    context.set_forkserver_preload(names)
    # The fork server copies this environment when it starts; it does not get `sys.path` otherwise.
    search_path = {"PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
    with temporary_environment(FORK_SERVER_ENV | search_path):
        report = context.SimpleQueue()
        ready = context.Process(target=_report_preloaded, args=(names, report))
        try:
            ready.start()  # answered once the preloading is done
        except (EOFError, OSError) as exc:
            raise FlexlockError(
                f"the fork server of warm flow runs died while importing {names} ({type(exc).__name__}): "
                "one of them raised when imported; its traceback is above"
            ) from None
        ready.join()
    if ready.exitcode != 0:
        raise FlexlockError(
            f"a warm flow-run process exited {ready.exitcode} before running anything (see its output above): "
            'each one imports the script that serves, so call the serving under `if __name__ == "__main__":`'
        )
    if missing := report.get():
        raise FlexlockError(f"cannot preload {missing} for warm flow runs: no such module on this sys.path")
    original = engine.multiprocessing
    engine.multiprocessing = _ForkServerForSpawn(multiprocessing, context)  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.multiprocessing = original
