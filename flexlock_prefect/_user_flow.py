"""A Prefect flow that carries the names of the user's function it wraps, and deploys from them.

`locked_flow` and `diag_flow` run the user's function inside a wrapper with other parameters.
The flow takes the function's name, module and docstring, so the UI shows the user's names and
a deployment's entrypoint is the user's file. The entrypoint Prefect computes is
`<file>:<function qualname>`, which names the user's function itself only in the decorator
form. In the call form (`diag = diag_flow(log_my_run)`) the function stays bound to its own
name and the flow to another, so before a deployment is built the flow looks up the name it is
bound to in its module.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from prefect import Flow, flow
from prefect.exceptions import ScriptError
from prefect.utilities.importtools import import_object

from flexlock_prefect.exceptions import FlexlockError


def user_flow(function: Callable[..., Any], wrapper: Callable[..., Any], flow_kwargs: dict[str, Any]) -> Flow:
    """`prefect.flow(**flow_kwargs)(wrapper)`, named after `function`, deployable in either form."""
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(wrapper, attribute, getattr(function, attribute))
    made = flow(**flow_kwargs)(wrapper)
    for method in ("to_deployment", "ato_deployment"):  # serve(), deploy() and Runner.add_flow use one
        setattr(made, method, _from_bound_name(made, getattr(made, method)))
    return made


def _from_bound_name(made: Flow, build: Callable[..., Any]) -> Callable[..., Any]:
    """`build` (a deployment builder of `made`) that first names the flow's function after the
    module-level name `made` is bound to, so the entrypoint Prefect computes finds the flow."""

    @functools.wraps(build)
    def build_from_bound_name(*args: Any, **kwargs: Any) -> Any:
        made.fn.__qualname__ = bound_name(made)
        return build(*args, **kwargs)

    return build_from_bound_name


def load_entrypoint(entrypoint: str, what: str) -> Any:
    """The object at `path/to/file.py:NAME` or `package.module.NAME`, or one error saying which
    `what` (e.g. "the diag") could not be loaded and why."""
    try:
        return import_object(entrypoint)
    except ScriptError as exc:  # the file is missing, or raised while it was imported
        cause = exc.user_exc
        raise FlexlockError(
            f"cannot load {what} {entrypoint!r}: its file failed to load ({type(cause).__name__}: {cause}); "
            "give an existing FILE.py:NAME or module.NAME"
        ) from None
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as exc:
        raise FlexlockError(
            f"cannot load {what} {entrypoint!r} ({type(exc).__name__}: {exc}): give FILE.py:NAME or module.NAME"
        ) from None


def bound_name(made: Flow) -> str:
    """The module-level name that holds `made` (or a copy of it from `with_options`); the
    function's own name when none does, as in the decorator form."""
    module = sys.modules.get(made.fn.__module__)
    for name, value in vars(module).items() if module else ():
        if isinstance(value, Flow) and value.fn is made.fn:
            return name
    return made.fn.__name__
