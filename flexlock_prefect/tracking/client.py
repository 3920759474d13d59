"""The one way flexlock talks to an MLflow tracking server: a checked client, errors mapped.

`connect()` probes an HTTP server before the first request (MLflow's own client retries for
minutes before it gives up) and gives a `Tracking` whose `errors()` turns MLflow and HTTP errors
into a `TrackingError` that says what they mean (`tracking/errors.py`), the URI's credentials
stripped. The helpers here batch requests to MLflow's limits and cache experiment ids, since
over HTTP every request costs tens of ms.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag, ViewType
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import UNAUTHENTICATED
from mlflow.tracking._tracking_service.utils import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from flexlock_prefect.exceptions import TrackingError
from flexlock_prefect.redact import strip_url_credentials
from flexlock_prefect.settings import get_settings
from flexlock_prefect.tracking.errors import meaning
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
        """MLflow and HTTP errors inside the block become a TrackingError without credentials;
        its requests give up on a lost server within seconds (`bounded_retries`)."""
        try:
            with bounded_retries():
                yield
        except (MlflowException, requests.RequestException) as exc:
            raise meaning(self.uri, exc) from None  # MLflow's text may hold the URI's credentials


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
    # With the credentials and TLS settings MLflow's own requests carry: a proxy in front of the
    # server may want them even for /health (MLflow's basic-auth app does not).
    creds = get_default_host_creds(uri)
    for attempt in range(settings.tracking_health_attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            answer = http_request(creds, "/health", "GET", max_retries=0, timeout=5, raise_on_status=False)
        except (requests.RequestException, MlflowException) as exc:
            problem = type(exc).__name__
            continue
        if answer.ok:
            _healthy_at[uri] = time.monotonic()
            return
        if answer.status_code in (401, 403):  # it is there, and said no: asking again changes nothing
            raise meaning(uri, MlflowException(f"HTTP {answer.status_code}", error_code=UNAUTHENTICATED))
        problem = "it answered but is not healthy"
    raise TrackingError(
        f"MLflow tracking server {strip_url_credentials(uri)} is unreachable after "
        f"{settings.tracking_health_attempts} attempts ({problem}): start it, or point MLFLOW_TRACKING_URI at a "
        "running one"
    )


def run_url(tracking_uri: str, run_id: str, experiment_id: str | None = None) -> str | None:
    """The run's page in the MLflow UI of an HTTP tracking server, credentials stripped (MLflow
    finds the experiment of `#/runs/<id>` itself); None for a local store, which has no UI URL."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = strip_url_credentials(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"{base}/#/runs/{run_id}"


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


class _EnvOverlay:
    """MLflow environment variables given other values only while blocks that need them run.

    Some MLflow behaviours have no switch but an environment variable read on every call. Blocks
    may nest and run at once in threads, so they are counted: the first sets the variables, the
    last restores them. A variable that was unset is restored to MLflow's default value, never
    deleted: another thread iterating `os.environ` (requests and httpx do, to find proxies) would
    get a `KeyError` for a key deleted under it. So a variable holding MLflow's default counts
    as unset (it is what a restore leaves, and what child processes inherit); with
    `override=False`, any other value the user set is left as it is.
    """

    def __init__(self, values: Callable[[], Mapping[Any, str]], *, override: bool) -> None:
        self._values = values  # MLflow's variable (from mlflow.environment_variables) -> value
        self._override = override
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: dict[str, str] = {}

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = {}
                for variable, value in self._values().items():
                    before = os.environ.get(variable.name, str(variable.default))
                    if before != str(variable.default) and not self._override:
                        continue  # the user's own setting
                    self._saved[variable.name] = before
                    os.environ[variable.name] = value
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    os.environ.update(self._saved)


quiet_run_end = _EnvOverlay(lambda: {MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: "true"}, override=True)
"""Inside the block, ending a run neither prints its URL nor fetches the run again for it.

MLflow prints the URL of a run it ends on stdout, built from the tracking URI (which may hold
credentials), and fetches the run to build it."""

bounded_retries = _EnvOverlay(
    lambda: {
        MLFLOW_HTTP_REQUEST_MAX_RETRIES: str(get_settings().tracking_retries),
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR: "1",
    },
    override=False,
)
"""Inside the block, a tracking server lost mid-operation fails a request within about 10 s.

The health check before an operation catches a server that is already down; one that goes
away during it is seen only through MLflow's retries of each request, which by default last
about 4 minutes. So MLflow's `MLFLOW_HTTP_REQUEST_MAX_RETRIES` is `FLEXLOCK_TRACKING_RETRIES` (3)
and `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` 1 in the block, each unless the user set it. Other
threads' MLflow requests made meanwhile get the same bound."""
