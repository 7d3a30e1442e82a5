"""A real browser and a real `evidently ui` for the tests that check what a user sees: headless
chromium (the Debian package; `make system-deps`) loading a page, and the Evidently UI serving
a workspace on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import BIN, free_port, skip_unless_required


def headless_chromium(
    url: str,
    profile: Path,
    *,
    screenshot: Path | None = None,
    window: str = "1400,1100",
    budget_ms: int = 10000,
) -> str:
    """The DOM of ``url`` after its scripts ran (``budget_ms`` of virtual time), and, given
    ``screenshot``, a PNG of it there; ``profile`` is a fresh user-data directory. Skips (fails
    where CI requires system packages) when chromium is not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        skip_unless_required("chromium not installed (make system-deps): page not rendered")
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    if screenshot is not None:
        subprocess.run(
            [*common, f"--window-size={window}", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert screenshot.read_bytes()[:4] == b"\x89PNG"
    return dom


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class EvidentlyUI:
    """A real `evidently ui --workspace` on 127.0.0.1 (telemetry off); use as a context manager."""

    def __init__(self, workspace: Path, log: Path):
        self.workspace = workspace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = None

    def __enter__(self) -> EvidentlyUI:
        command = [str(BIN / "evidently"), "ui", "--workspace", str(self.workspace)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "w") as handle:
            self.proc = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DO_NOT_TRACK": "1"},
                start_new_session=True,
            )
        try:
            self.wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                get_json(f"{self.url}/api/projects/")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"evidently ui did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.5)

    def api(self, path: str):
        return get_json(f"{self.url}/api/{path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)
