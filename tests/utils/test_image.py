"""read_image on the images users actually have (all generated in tmp_path with PIL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.utils.image import ImageReadError, read_image


def _rgb(h: int = 6, w: int = 9) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3)
    assert np.array_equal(out, arr)


def test_grayscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    g = _rgb()[..., 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = read_image(str(tmp_path / "g.png"))
    assert out.shape == (6, 9, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], g)


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3
    assert out[1, 0].tolist() == [round(200 * 128 / 255)] * 3


def test_16bit_is_scaled_to_8bit(tmp_path: Path) -> None:
    arr16 = np.array([[0, 65535, 32768], [1000, 20000, 65535]], dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")  # really stored as 16 bit
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    expected = np.clip(arr16 / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected)


def test_palette_image_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0  # index 0 (red) is transparent
    im.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png")
    assert out[0, 0].tolist() == [0, 255, 0]
    assert out[1, 2].tolist() == [0, 0, 0]  # transparent red -> black


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255  # left half white in the stored pixels
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise to display upright
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (8, 4, 3)  # upright: height and width swapped
    # the stored left half ends up at the top after a clockwise rotation
    assert out[:4].mean() > 200 and out[4:].mean() < 50


def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match="nope.jpg.*not found"):
        read_image(p)
    assert issubclass(ImageReadError, OSError)


@pytest.mark.parametrize(
    "payload", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20]
)
def test_corrupt_file_raises_naming_it(tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "bad.png"
    p.write_bytes(payload)
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(p)


def test_truncated_jpeg_raises(tmp_path: Path) -> None:
    p = tmp_path / "t.jpg"
    Image.fromarray(_rgb(64, 64)).save(p, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.jpg"):
        read_image(p)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path)
