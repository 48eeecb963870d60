"""utils.sources.SourceReader: unreadable images / video packets are skipped (or fatal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.utils.errors import MissingFileError, UnreadableFileError, UserError
from instseg.utils.sources import SourceReader, iter_source


def write_images(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_folder_with_a_truncated_jpeg_skips_it_with_one_warning(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs")
    truncate(paths[1])
    warnings: list[str] = []
    reader = SourceReader(tmp_path / "imgs", warn=warnings.append)
    assert reader.size_hint() == 4
    got = [(name, reader.index, image.shape) for name, image, _ in reader]
    assert got == [("000", 0, (40, 50, 3)), ("002", 2, (40, 50, 3)), ("003", 3, (40, 50, 3))]
    assert len(warnings) == 1 and "001.jpg" in warnings[0] and "cannot read image" in warnings[0]
    assert reader.summary() == f"1 of 4 items of {tmp_path / 'imgs'} were unreadable and skipped"
    with pytest.raises(UnreadableFileError, match=r"001\.jpg: cannot read image"):
        list(SourceReader(tmp_path / "imgs", strict=True))
    with pytest.raises(UnreadableFileError, match=r"001\.jpg"):
        list(iter_source(tmp_path / "imgs"))  # the plain iterator stays strict


def test_missing_source_is_a_user_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nope: no such file, folder or glob match"):
        list(SourceReader(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match=r"empty: no images found"):
        SourceReader(tmp_path / "empty").size_hint()
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(UnreadableFileError, match=r"zero\.mp4: cannot open video"):
        list(SourceReader(tmp_path / "zero.mp4"))
    assert issubclass(MissingFileError, (UserError, FileNotFoundError))


def test_video_with_a_corrupt_packet_keeps_the_other_frames(tmp_path: Path) -> None:
    from instseg.utils.video_writer import write_video

    frames = [np.random.default_rng(i).integers(0, 255, (64, 80, 3), np.uint8) for i in range(12)]
    good = write_video(tmp_path / "v.mp4", frames, fps=8)
    data = bytearray(good.read_bytes())
    start = len(data) // 3
    for i in range(start, start + 3000):  # garble bytes in the middle of the stream
        data[i] = (data[i] * 7 + 13) % 256
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    reader = SourceReader(bad, warn=lambda m: None)
    names = [name for name, _, _ in reader]
    assert reader.skipped and len(names) + len(reader.skipped) == reader.total == 12
    assert names == sorted(set(names)) and all(len(n) == 6 and n.isdigit() for n in names)
    assert "bad.mp4: frame" in reader.skipped[0] and "does not decode" in reader.skipped[0]
    with pytest.raises(UnreadableFileError, match=r"bad\.mp4"):
        list(SourceReader(bad, strict=True))
    clean = SourceReader(good)
    assert [n for n, _, _ in clean] == [f"{i:06d}" for i in range(12)] and not clean.skipped
