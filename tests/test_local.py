"""The local Prefect server that `demo` and `serve` start: its UI talks to its own API."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from flexlock_prefect.local import start_prefect_server

pytestmark = pytest.mark.integration


def test_the_ui_of_a_server_on_a_free_port_talks_to_that_servers_api(tmp_path: Path) -> None:
    server, url = start_prefect_server(tmp_path / "prefect", ui=True)
    try:
        with urllib.request.urlopen(url.removesuffix("/api") + "/ui-settings", timeout=10) as response:
            settings = json.load(response)
    finally:
        server.stop()
    assert settings["api_url"] == url
