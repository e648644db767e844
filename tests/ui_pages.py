"""Drive the MLflow UI as a person sees it: `mlflow server` on a store, headless Chromium
(Debian's `chromium`) rendering a page. Shared by tests/flows/test_ui.py and tests/ui_screenshot.py."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser

import requests

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store_uri: str, port: int | None = None, startup_s: float = 240):
    """``mlflow server`` on ``store_uri`` at 127.0.0.1 (one worker); yields its base URL."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or too busy starting
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(
                    f"mlflow server did not start on {base}: {log.read()[-2000:].decode(errors='replace')}"
                )
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class _Text(HTMLParser):
    SKIP = {"script", "style", "noscript", "svg"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.parts.append(data.strip())


def page_text(html: str) -> str:
    """The visible text of a rendered page, one text node per line."""
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)


def _chromium(
    browser: str, url: str, extra: list[str], budget_ms: int, timeout_s: float
) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="quantgate-chromium-", ignore_cleanup_errors=True) as profile:
        return subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *(extra if any(e.startswith("--window-size") for e in extra) else ["--window-size=1500,1100", *extra]),
                url,
            ],
            capture_output=True,
            timeout=timeout_s,
            check=True,
        )


def rendered_text(
    browser: str,
    url: str,
    *,
    wait_for: tuple[str, ...] = (),
    tries: int = 3,
    budget_ms: int = 30000,
    timeout_s: float = 400,
) -> str:
    """The page's text after the single-page app rendered it. A slow server can leave the page
    half-loaded at the end of the virtual time budget, so it is loaded again (longer budget)
    until every ``wait_for`` string is there or ``tries`` runs out; the last text is returned."""
    text = ""
    for attempt in range(tries):
        html = _chromium(browser, url, ["--dump-dom"], budget_ms * (attempt + 1), timeout_s).stdout.decode(
            "utf-8", "replace"
        )
        text = page_text(html)
        if all(w in text for w in wait_for):
            break
    return text


def missing(text: str, expected: list[str]) -> list[str]:
    """Which of ``expected`` the rendered text lacks (each a whole text line)."""
    lines = set(text.splitlines())
    return [e for e in expected if e not in lines]


def values_after(text: str, label: str, count: int) -> list[float | None]:
    """The ``count`` cells that follow the row label ``label`` in a rendered table, as numbers
    (``None`` for a cell the UI shows as "-"): how the comparison page lists a metric per version."""
    lines = text.splitlines()
    if label not in lines:
        return []
    cells = lines[lines.index(label) + 1 : lines.index(label) + 1 + count]
    return [None if c == "-" else float(c) for c in cells]


def row_starts(text: str, first: str, then: str) -> bool:
    """Whether a line ``first`` is directly followed by a line ``then`` (a table row's first
    two cells, e.g. a logged model's name and its status)."""
    lines = text.splitlines()
    return any(a == first and b == then for a, b in zip(lines, lines[1:]))
