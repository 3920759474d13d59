"""Prefect API failures as one clear `PrefectApiError`: what failed, where, and how to fix it.

Prefect's client raises httpx errors (a refused connection, a timeout, an HTTP status) with the
request buried in the traceback. Everything flexlock-prefect does through the Prefect API (locks,
approvals, deployments, events) runs inside `prefect_api_errors()`, so the CLI prints one line
and the Python API raises an error that names the server and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from prefect.settings import PREFECT_API_URL

from flexlock_prefect.exceptions import PrefectApiError
from flexlock_prefect.redact import strip_url_credentials

_AUTH_STATUSES = {httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN}


def api_url() -> str:
    """The configured Prefect API, without credentials (or a note that there is none)."""
    url = PREFECT_API_URL.value()
    return strip_url_credentials(url) if url else "(no PREFECT_API_URL)"


@contextmanager
def prefect_api_errors(operation: str) -> Iterator[None]:
    """Turn the Prefect client's transport and HTTP errors inside the block into a `PrefectApiError`.

    `operation` says what was being done ("take the lock flexlock-run-…", "resume the flow run …").

    Example:
        >>> with prefect_api_errors("read the flow run 0b…"):  # doctest: +SKIP
        ...     client.read_flow_run(flow_run_id)
    """
    try:
        yield
    except (httpx.TransportError, httpx.HTTPStatusError) as exc:
        raise as_prefect_api_error(exc, operation) from None


def as_prefect_api_error(exc: httpx.TransportError | httpx.HTTPStatusError, operation: str) -> PrefectApiError:
    """The one-line error for a failed Prefect API request: what failed, the server, the fix."""
    if isinstance(exc, httpx.TransportError):
        return PrefectApiError(
            f"cannot {operation}: the Prefect API at {api_url()} is unreachable ({type(exc).__name__}: "
            f"{exc}); start it (`prefect server start`) or point PREFECT_API_URL at a running server"
        )
    status = exc.response.status_code
    request = f"{exc.request.method} {exc.request.url.path}"
    if status in _AUTH_STATUSES:
        fix = "set PREFECT_API_AUTH_STRING (or PREFECT_API_KEY) to credentials this server accepts"
    else:
        fix = f"the server said: {_detail(exc.response)}"
    return PrefectApiError(
        f"cannot {operation}: the Prefect API at {api_url()} answered HTTP {status} to {request}; {fix}"
    )


def _detail(response: httpx.Response, limit: int = 200) -> str:
    """The server's reason, shortened to one line."""
    try:
        body = response.json()
        text = str(body.get("detail", body) if isinstance(body, dict) else body)
    except ValueError:
        text = response.text
    line = " ".join(text.split()) or response.reason_phrase
    return line if len(line) <= limit else f"{line[: limit - 1]}…"
