"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4; the standard library is enough, no websocket
client). The browser comes from Debian's ``chromium-headless-shell`` (or ``chromium``) package,
installed by ``./run setup-browser``; ``INSTSEG_CHROMIUM`` names another binary."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    env = os.environ.get("INSTSEG_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPPipe:
    """One headless browser; :meth:`open` loads a page and reports what went wrong on it."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        args = [
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--no-first-run",
            "--allow-file-access-from-files",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        # the browser reads commands on fd 3 and answers on fd 4: the child's ends are moved
        # above those numbers (close-on-exec), then dup2'ed onto 3 and 4 (inheritable) in the
        # child; close_fds=False since close_fds would close 3 and 4 after preexec_fn
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)

        def wire() -> None:
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            close_fds=False,
        )
        os.close(r)
        os.close(w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, *, timeout: float = 30.0) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child_r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_child_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def open(self, page: Path, screenshot: Path) -> dict[str, Any]:
        """Load ``page``; returns ``{"errors": [console errors, exceptions, failed loads],
        "broken": [media that did not load], "counts": {...}, "title": str}`` and saves a
        full-page PNG to ``screenshot``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.events = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=s)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=s,
        )
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=s)
        self.wait_event("Page.loadEventFired", timeout=60)
        check = self.send(
            "Runtime.evaluate",
            {"expression": MEDIA_CHECK, "awaitPromise": True, "returnByValue": True},
            session=s,
            timeout=60,
        )
        if "exceptionDetails" in check:
            raise RuntimeError(f"media check failed: {check['exceptionDetails']}")
        value = check["result"]["value"]
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=s
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        self.send("Target.closeTarget", {"targetId": target})
        errors = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in (
                "error",
                "assert",
            ):
                errors.append("console: " + " ".join(str(a.get("value", a)) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append("log: " + p["entry"]["text"] + " " + p["entry"].get("url", ""))
        return {"errors": errors, **value}

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child_w)
        os.close(self._from_child_r)


# Every <img>, SVG <image> and <video> of the page: loaded, or listed in "broken".
MEDIA_CHECK = r"""
(async () => {
  const broken = [];
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => {})));
  for (const i of imgs) if (!(i.complete && i.naturalWidth > 0)) broken.push("img " + i.alt);
  const svgImages = [...document.querySelectorAll("svg image")];
  for (const el of svgImages) {
    const href = el.getAttribute("href");
    const ok = await new Promise(res => {
      const t = new Image();
      t.onload = () => res(t.naturalWidth > 0);
      t.onerror = () => res(false);
      t.src = href;
    });
    if (!ok) broken.push("svg image " + el.closest("svg").getAttribute("aria-label"));
  }
  const videos = [...document.querySelectorAll("video")];
  for (const v of videos) {
    const ok = v.readyState >= 1 || await new Promise(res => {
      v.addEventListener("loadedmetadata", () => res(true), {once: true});
      v.addEventListener("error", () => res(false), {once: true});
      setTimeout(() => res(v.readyState >= 1), 15000);
      v.load();
    });
    if (!ok || !(v.videoWidth > 0))
      broken.push("video " + v.getAttribute("src") + " error " + (v.error && v.error.code));
  }
  return {broken, title: document.title,
          counts: {img: imgs.length, svg_image: svgImages.length, video: videos.length,
                   paths: document.querySelectorAll(".grid path").length}};
})()
"""


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no headless Chromium found (chromium-headless-shell / chromium on PATH, or "
            "INSTSEG_CHROMIUM): run `./run setup-browser` (Debian package chromium-headless-shell)"
        )
    browser = CDPPipe(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()
