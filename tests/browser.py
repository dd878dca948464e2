"""A real browser for the UI checks: Debian's headless Chromium driven over the DevTools protocol with the
``websockets`` client Prefect already installs (no browser download, no WebDriver package).

    with Browser() as b:                      # None of it when chromium is not installed: see find_chromium()
        b.open("http://127.0.0.1:4200/runs")
        b.wait_for_text("eval_sft", timeout=60)
        b.screenshot("flow-run.png")

``apt-get install chromium`` provides ``/usr/bin/chromium``; ``ITOOL_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    """The Chromium binary, or None (the UI checks are then skipped, saying so)."""
    env = os.environ.get("ITOOL_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium with a fresh profile and one page; :meth:`close` stops it and removes the profile."""

    def __init__(self, width: int = 1400, height: int = 900, binary: str | None = None):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no chromium binary (apt-get install chromium, or set ITOOL_CHROMIUM)")
        self.profile = tempfile.mkdtemp(prefix="itool-chromium-")
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        self.ws = None
        try:
            self._connect(timeout=60)
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> None:
        from websockets.sync.client import connect

        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if port_file.is_file() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                        pages = [p for p in json.load(r) if p.get("type") == "page"]
                except OSError:
                    pages = []
                if pages:
                    self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
                    return
            time.sleep(0.2)
        raise TimeoutError(f"chromium's DevTools endpoint did not come up in {timeout}s")

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        assert self.ws is not None
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer in {timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        return res.get("result", {}).get("value")

    def text(self) -> str:
        """What the page says (``document.body.innerText``)."""
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        """The page's text once it contains every needle; TimeoutError (with what it did say) otherwise."""
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise TimeoutError(f"page never showed {missing}; it said:\n{text[:3000]}")

    def click_text(self, text: str) -> bool:
        """Click the first visible element whose own text is ``text`` (a tab, a button); whether one was found."""
        js = (
            "(() => { const want = WANT;"
            " const els = [...document.querySelectorAll('button, a, li, [role=tab], span, div')];"
            " const el = els.find(e => e.offsetParent !== null && e.textContent.trim() === want);"
            " if (!el) return false; el.click(); return true; })()"
        ).replace("WANT", json.dumps(text))
        return bool(self.eval(js))

    def click_all(self, selector: str) -> int:
        """Click every visible element matching the CSS ``selector`` (expanders, a panel's close button); how many."""
        js = (
            "(() => { const els = [...document.querySelectorAll(SEL)].filter(e => e.offsetParent !== null);"
            " els.forEach(e => e.click()); return els.length; })()"
        ).replace("SEL", json.dumps(selector))
        return int(self.eval(js) or 0)

    def resize(self, width: int, height: int) -> None:
        """The page's viewport (a taller one shows a long page in one screenshot)."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def scroll_to_text(self, text: str) -> bool:
        """Scroll the first element whose own text is ``text`` to the top of the view; whether one was found."""
        js = (
            "(() => { const want = WANT; const el = [...document.querySelectorAll('*')]"
            ".find(e => e.children.length === 0 && e.textContent.trim() === want);"
            " if (!el) return false; el.scrollIntoView({block: 'start'}); return true; })()"
        ).replace("WANT", json.dumps(text))
        return bool(self.eval(js))

    def screenshot(self, path: str | Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
