"""The Prefect API is opt-in per test: only a test that requests `prefect_api` sees it, and the
tests after it run exactly as if no Prefect server existed."""

from __future__ import annotations

import os

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flexlock_prefect.concurrency import exclusive

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


def assert_no_prefect_api() -> None:
    assert not PREFECT_API_URL.value()
    assert "PREFECT_API_URL" not in os.environ
    with exclusive("flexlock-run-no-api") as locked:  # no API: supersession takes no Prefect lock
        assert locked is False


def test_a_test_before_any_prefect_api_sees_none() -> None:
    assert_no_prefect_api()


def test_a_test_with_the_fixture_talks_to_the_session_server(prefect_api: str) -> None:
    assert PREFECT_API_URL.value() == prefect_api and os.environ["PREFECT_API_URL"] == prefect_api
    with get_client(sync_client=True) as client:
        assert client.api_healthcheck() is None
    with exclusive("flexlock-run-fixture-test") as locked:
        assert locked is True


def test_a_test_after_one_with_the_fixture_sees_no_prefect_api() -> None:
    assert_no_prefect_api()
