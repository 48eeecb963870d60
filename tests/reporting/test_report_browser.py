"""The report pages render in headless Chromium: no console error or exception, every image and
video loads; a screenshot of each page is saved in the test's tmp folder. Skipped when no
Chromium is installed (``./run setup-browser`` installs Debian's chromium-headless-shell)."""

import pytest

from instseg.reporting import build_report


@pytest.mark.parametrize(
    "folder, expect",
    [
        ("run_dir", {"img": 1, "svg_image": 3}),
        ("predict_dir", {"img": 2, "svg_image": 3}),
        ("track_dir", {"video": 1, "img": 7}),
        ("inpaint_dir", {"video": 1, "img": 8}),
    ],
)
def test_report_page_renders_cleanly(request, chromium, tmp_path, folder, expect):
    src = request.getfixturevalue(folder)
    page = build_report(src)
    shot = tmp_path / f"{folder}.png"
    got = chromium.open(page, shot)
    assert got["errors"] == []
    assert got["broken"] == []
    assert got["title"] == f"instseg report: {src.name}"
    for k, n in expect.items():
        assert got["counts"][k] == n, k
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_the_check_sees_broken_media_and_console_errors(chromium, tmp_path):
    """The harness is not blind: a missing picture, a missing video and a console error."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>bad</title></head>'
        '<body><img src="absent.png" alt="gone"><video src="absent.mp4"></video>'
        '<script>console.error("boom")</script></body></html>'
    )
    got = chromium.open(page, tmp_path / "bad.png")
    assert any("boom" in e for e in got["errors"])
    assert any(b.startswith("img gone") for b in got["broken"])
    assert any(b.startswith("video absent.mp4") for b in got["broken"])
