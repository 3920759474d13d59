"""The one way flexlock talks to an MLflow tracking server: a checked client, errors mapped.

`connect()` probes an HTTP server before the first request (MLflow's own client retries for
minutes before it gives up) and gives a `Tracking` whose `errors()` turns MLflow and HTTP errors
into a `TrackingError` with the URI's credentials stripped. The helpers here batch requests to
MLflow's limits and cache experiment ids, since over HTTP every request costs tens of ms.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.redact import Redactor, strip_url_credentials
from flexlock_prefect.settings import get_settings
from flexlock_prefect.tracking.tags import CLASSIC_RUNS_VIEW, MLFLOW_EXPERIMENT_KIND

BATCH_LIMIT = 100
"""Params or tags per `log_batch` request: MLflow's limit."""
_healthy_at: dict[str, float] = {}
_experiment_ids: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Tracking:
    """A client of the tracking server at `uri` that has answered its health check."""

    uri: str
    client: MlflowClient

    @contextmanager
    def errors(self) -> Iterator[None]:
        """MLflow and HTTP errors inside the block become a TrackingError without credentials."""
        try:
            yield
        except (MlflowException, requests.RequestException) as exc:
            text = str(exc).strip()
            message = Redactor.from_settings().scrub(text.splitlines()[0] if text else "")
            raise TrackingError(f"MLflow at {strip_url_credentials(self.uri)} failed: {message}") from None


def connect() -> Tracking:
    """The configured tracking server (`MLFLOW_TRACKING_URI`), checked: call before the first request."""
    uri = mlflow.get_tracking_uri()
    check_tracking_server(uri)
    return Tracking(uri, MlflowClient(uri))


def check_tracking_server(uri: str, healthy_for_s: float | None = None) -> None:
    """Fail fast, with the URI's credentials stripped, when an HTTP tracking server does not answer.

    A few tries within seconds (`FLEXLOCK_TRACKING_HEALTH_ATTEMPTS`); a server that answered is
    not probed again for `healthy_for_s` (default `FLEXLOCK_TRACKING_HEALTHY_FOR_S`; 0 probes it
    every time, for rare calls that must not wait out MLflow's retries on a server gone since).
    """
    settings = get_settings()
    fresh_for = settings.tracking_healthy_for_s if healthy_for_s is None else healthy_for_s
    if not uri.startswith(("http://", "https://")) or time.monotonic() - _healthy_at.get(uri, -fresh_for) < fresh_for:
        return
    problem = ""
    for attempt in range(settings.tracking_health_attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            if requests.get(uri.rstrip("/") + "/health", timeout=5).ok:
                _healthy_at[uri] = time.monotonic()
                return
            problem = "it answered but is not healthy"
        except requests.RequestException as exc:
            problem = type(exc).__name__
    raise TrackingError(
        f"MLflow tracking server {strip_url_credentials(uri)} is unreachable after "
        f"{settings.tracking_health_attempts} attempts ({problem}): start it, or point MLFLOW_TRACKING_URI at a "
        "running one"
    )


def log_batch(
    client: MlflowClient, run_id: str, params: dict[str, str] | None = None, tags: dict[str, str] | None = None
) -> None:
    """Params and tags in as few requests as MLflow's batch limits allow."""
    param_items = [Param(k, v) for k, v in (params or {}).items()]
    tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
    while param_items or tag_items:
        client.log_batch(run_id, params=param_items[:BATCH_LIMIT], tags=tag_items[:BATCH_LIMIT])
        param_items, tag_items = param_items[BATCH_LIMIT:], tag_items[BATCH_LIMIT:]


def experiment_id(tracking: Tracking, name: str) -> str:
    """The id of experiment `name`, created if missing (opening in MLflow's runs view, not its
    GenAI traces view); cached per server for this process."""
    cached = _experiment_ids.get((tracking.uri, name))
    if cached:
        return cached
    client = tracking.client
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            found = client.create_experiment(name, tags={MLFLOW_EXPERIMENT_KIND: CLASSIC_RUNS_VIEW})
        except MlflowException:  # created meanwhile by a concurrent relog
            found = client.get_experiment_by_name(name).experiment_id
    else:
        found = experiment.experiment_id
    _experiment_ids[(tracking.uri, name)] = found
    return found


def all_experiment_ids(client: MlflowClient) -> list[str]:
    """Every live experiment's id: a logical run's runs are searched on the whole server."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


_QUIET = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: str | None = None


@contextmanager
def quiet_run_end() -> Iterator[None]:
    """Inside the block, ending a run neither prints its URL nor fetches the run again for it.

    MLflow prints the URL of a run it ends on stdout, built from the tracking URI (which may hold
    credentials), and fetches the run to build it. Its only switch is an environment variable,
    so it is set for the block alone (counted, for concurrent relogs in threads) and restored.
    """
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = os.environ.get(_QUIET)
            os.environ[_QUIET] = "true"
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                if _quiet_saved is None:
                    os.environ.pop(_QUIET, None)
                else:
                    os.environ[_QUIET] = _quiet_saved
