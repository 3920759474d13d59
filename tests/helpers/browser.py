"""Headless Chromium for the UI tests, driven over its DevTools protocol (CDP).

The Prefect and MLflow UIs are single-page apps: a page is loaded, then polled until what the
test waits for is in its DOM (a bounded number of times), and only then read, clicked or
photographed. CDP speaks JSON over a websocket; `websockets` comes with Prefect.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from flexlock_prefect.local import ServerProcess
from tests.helpers.prefect_api import poll

WINDOW = (1600, 1000)
PAGE_TIMEOUT_S = 60.0
_CLICK = "(e => e ? (e.click(), true) : false)"  # applied to an element or null: whether it was clicked


def chromium_executable() -> str | None:
    """Debian's `chromium` (`apt-get install chromium`), or another Chromium/Chrome on PATH."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for path in map(shutil.which, names) if path), None)


class Page:
    """The one tab of a headless Chromium."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command and its result (events, which no domain is enabled for, are skipped)."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=PAGE_TIMEOUT_S))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"CDP {method}: {message['error']}")
                return message["result"]

    def goto(self, url: str) -> None:
        """Load `url` as a new document, up to its load event (through about:blank: from a loaded
        app, a URL that differs only after `#` would be a same-document navigation)."""
        self.call("Page.navigate", url="about:blank")
        result = self.call("Page.navigate", url=url)
        if "errorText" in result:
            raise AssertionError(f"{url}: {result['errorText']}")
        self.wait_for(f"the load of {url}", "location.href !== 'about:blank' && document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def tables(self) -> list[list[list[str]]]:
        """The trimmed text of the cells of every table, row by row, header rows included."""
        cells = "[...t.rows].map(r => [...r.cells].map(c => c.innerText.trim()))"
        return self.evaluate(f"[...document.querySelectorAll('table')].map(t => {cells})")

    def click(self, selector: str) -> None:
        if not self.evaluate(f"{_CLICK}(document.querySelector({json.dumps(selector)}))"):
            raise AssertionError(f"nothing to click at {selector!r} on {self.evaluate('location.href')}")

    def click_button(self, label: str, timeout_s: float = PAGE_TIMEOUT_S) -> None:
        """Poll until a button labelled `label` (its trimmed text) is shown, then click it once."""
        button = f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === {json.dumps(label)})"
        self.wait_for(f"the {label} button", f"{_CLICK}({button})", timeout_s)

    def fill(self, selector: str, value: str) -> None:
        """Set a form control's value as typing or choosing does: the app hears `input` and `change`."""
        fill = (
            "(e, v) => { if (!e) return false; e.value = v;"
            " ['input', 'change'].forEach(t => e.dispatchEvent(new Event(t, {bubbles: true}))); return true; }"
        )
        if not self.evaluate(f"({fill})(document.querySelector({json.dumps(selector)}), {json.dumps(value)})"):
            raise AssertionError(f"no form control at {selector!r} on {self.evaluate('location.href')}")

    def wait_for(self, what: str, expression: str, timeout_s: float = PAGE_TIMEOUT_S) -> Any:
        """Poll until the expression is truthy; returns its value. On timeout the assertion says
        what was awaited, on which URL, and what the page showed."""
        value, done = poll(lambda: self.evaluate(expression), bool, timeout_s, interval_s=0.25)
        if not done:
            raise AssertionError(
                f"{what}: not shown within {timeout_s:.0f}s at {self.evaluate('location.href')}; "
                f"the page shows:\n{self.text()[:3000]}"
            )
        return value

    def wait_for_element(self, what: str, selector: str, timeout_s: float = PAGE_TIMEOUT_S) -> None:
        """Poll until an element matches a CSS selector."""
        self.wait_for(what, f"document.querySelector({json.dumps(selector)}) !== null", timeout_s)

    def wait_for_text(self, *texts: str, timeout_s: float = PAGE_TIMEOUT_S) -> None:
        """Poll until every one of `texts` is in the page's visible text."""
        wanted = json.dumps(list(texts))
        self.wait_for(
            f"text {list(texts)}",
            f"{wanted}.every(t => document.body && document.body.innerText.includes(t))",
            timeout_s,
        )

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    """A headless Chromium with a fresh profile under `profile`, stopped when the block ends.

    Its DevTools port is read from the `DevToolsActivePort` file Chromium writes into the profile
    (port 0: a free port of its choosing).
    """
    executable = chromium_executable()
    if executable is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    profile.mkdir(parents=True, exist_ok=True)
    port_file = profile / "DevToolsActivePort"
    command = [
        executable,
        "--headless",
        "--no-sandbox",  # as root, Chromium refuses to start with its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    process = ServerProcess(command, log_path=profile / "chromium.log", ready=port_file.exists, timeout_s=60)
    try:
        port = _active_port(port_file)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            [target] = [t for t in json.load(response) if t["type"] == "page"]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            page = Page(socket)
            # --window-size is the window's, not the page's: the screenshots are exactly WINDOW
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=WINDOW[0],
                height=WINDOW[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        process.stop()


def _active_port(port_file: Path) -> int:
    """The port on the file's first line, once Chromium has finished writing it."""
    lines, done = poll(lambda: port_file.read_text().splitlines(), lambda lines: len(lines) >= 2, 10, 0.1)
    if not done:
        raise RuntimeError(f"Chromium wrote no DevTools port to {port_file}")
    return int(lines[0])
