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


# ------------------------------------------------------------------ synthetic output folders
# Small folders in the layouts the commands write, made with the project's own writers.


def _perfect_results(gt: dict, *, drop_category: int | None = None) -> list[dict]:
    """COCO results equal to the GT's visible masks (score 0.9), minus one category."""
    from instseg.evaluation.amodal import to_coco_gt

    coco = to_coco_gt(gt, target="visible")
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 0.9,
            "segmentation": a["segmentation"],
            "bbox": a["bbox"],
        }
        for a in coco["annotations"]
        if a["category_id"] != drop_category
    ]


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """Three generated synthetic test scenes (amodal layout: occlusion ratios)."""
    from instseg.data.synthetic import generate_scenes

    folder = tmp_path_factory.mktemp("scenes") / "test_n3"
    generate_scenes(folder, num_images=3, seed=0, image_size=(96, 96), min_objects=2, max_objects=4)
    return folder


@pytest.fixture()
def run_dir(tmp_path, scenes) -> Path:
    """A training run: config.yaml with the precision header, metrics.jsonl, metrics.json and
    results.json of the final evaluation (perfect except the first category present)."""
    import json

    from instseg.config import apply_overrides, dump_config
    from instseg.evaluation.coco import evaluate_coco
    from instseg.recipes.image_config import ImageTrainConfig
    from instseg.utils.io import atomic_write_json, read_json
    from instseg.utils.precision import precision_header

    out = tmp_path / "run"
    out.mkdir()
    cfg = apply_overrides(
        ImageTrainConfig(),
        [
            f"out_dir={out}",
            f"data.test_json={scenes / 'annotations.json'}",
            f"data.test_root={scenes}",
            f"data.train_json={scenes / 'annotations.json'}",
            f"data.train_root={scenes}",
        ],
    )
    dump_config(cfg, out / "config.yaml", header=precision_header("none", "cpu"))
    gt = read_json(scenes / "annotations.json")
    dropped = gt["annotations"][0]["category_id"]
    results = _perfect_results(gt, drop_category=dropped)
    atomic_write_json(out / "results.json", results)
    metrics = {t: evaluate_coco(gt, results, iou_type=t) for t in ("segm", "bbox")}
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    lines = []
    for it in (1, 2, 3, 4):
        rec = {"iter": it, "loss_mask": 1.0 / it, "loss_cls": 0.5 / it, "lr": 0.01, "time": 0.5}
        rec["total_loss"] = rec["loss_mask"] + rec["loss_cls"]
        if it in (2, 4):
            rec["eval"] = {"segm": {"AP": 10.0 * it}, "bbox": {"AP": 5.0 * it}}
        lines.append(json.dumps(rec))
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture()
def predict_dir(tmp_path, scenes) -> Path:
    """``instseg predict --save-vis --explain`` layout: vis/<stem>.jpg, results.json with the
    numeric stems as image ids, explain/<stem>_roi<k>.png."""
    import numpy as np
    from PIL import Image

    from instseg.utils.io import atomic_write_json, read_json

    out = tmp_path / "pred"
    (out / "vis").mkdir(parents=True)
    (out / "explain").mkdir()
    for f in sorted((scenes / "images").glob("*.png")):
        Image.open(f).convert("RGB").save(out / "vis" / f"{f.stem}.jpg")
    Image.fromarray(np.full((128, 448, 3), 200, np.uint8)).save(out / "explain" / "000001_roi0.png")
    Image.fromarray(np.full((128, 448, 3), 90, np.uint8)).save(out / "explain" / "000001_roi1.png")
    results = _perfect_results(read_json(scenes / "annotations.json"))
    atomic_write_json(out / "results.json", results)
    return out


@pytest.fixture()
def track_dir(tmp_path) -> Path:
    """``instseg track`` layout: results.json (YouTube-VIS), masks/<frame>.png, vis.mp4."""
    import numpy as np

    from instseg.data.davis import write_davis_label
    from instseg.data.ytvis import tracks_to_video_results
    from instseg.structures.masks import mask_to_rle
    from instseg.utils.io import atomic_write_json
    from instseg.utils.video_writer import write_video

    out = tmp_path / "track"
    tracks: dict[int, dict[int, tuple]] = {0: {}, 1: {}}
    frames = []
    for t in range(8):
        label = np.zeros((48, 64), np.uint8)
        label[10:20, 5 + 4 * t : 15 + 4 * t] = 1
        if t >= 3:
            label[30:40, 40:50] = 2
        write_davis_label(out / "masks" / f"{t:06d}.png", label)
        for tid in (0, 1):
            if (label == tid + 1).any():
                tracks[tid][t] = (mask_to_rle(label == tid + 1), 0.8, tid)
        frames.append(np.stack([label * 100] * 3, -1).astype(np.uint8))
    atomic_write_json(out / "results.json", tracks_to_video_results(tracks, 8, 1, [1, 2]))
    write_video(out / "vis.mp4", frames, fps=8)
    (out / "tracks.txt").write_text("")
    return out


@pytest.fixture()
def inpaint_dir(tmp_path) -> Path:
    """A real ``Inpainter.run`` output (non-learned fallback): frames/, amodal/, video.mp4,
    inpaint.json."""
    import numpy as np
    from PIL import Image

    from instseg.inference.inpainter import Inpainter, InpaintOptions

    rng = np.random.default_rng(0)
    src, vis, holes = tmp_path / "src", tmp_path / "visible", tmp_path / "holes"
    for d in (src, vis, holes):
        d.mkdir()
    for i in range(4):
        frame = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        v = np.zeros((48, 64), np.uint8)
        v[10:30, 10 + i : 30 + i] = 255
        h = np.zeros_like(v)
        h[10:30, 25 + i : 30 + i] = 255
        frame[h > 0] = 128
        Image.fromarray(frame).save(src / f"f{i}.png")
        Image.fromarray(v).save(vis / f"f{i}.png")
        Image.fromarray(h).save(holes / f"f{i}.png")
    out = tmp_path / "inpaint"
    opts = InpaintOptions(window=4, overlap=1)
    Inpainter(model=None, options=opts, progress=False).run(src, vis, out, holes_dir=holes)
    return out
