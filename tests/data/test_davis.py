"""DAVIS folder reader and indexed-PNG writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.data.davis import (
    VOID_LABEL,
    davis_palette,
    labels_to_masks,
    list_davis_sequences,
    read_davis_label,
    write_davis_label,
)

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"


def test_real_sequences_and_binary_masks() -> None:
    if not (DAVIS / "JPEGImages").is_dir():
        pytest.skip(f"shared DAVIS-2016 data not found at {DAVIS}")
    seqs = list_davis_sequences(DAVIS)
    lengths = {s.name: len(s) for s in seqs}
    assert len(seqs) == 9 and sum(lengths.values()) == 599 and lengths["soccerball"] == 48
    (bus,) = list_davis_sequences(DAVIS, sequences=["bus"])
    assert bus.frame_paths[3].name == "00003.jpg" and bus.label_paths[3].name == "00003.png"
    lab = bus.label(10)
    raw = np.array(Image.open(bus.label_paths[10]))
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}  # 0/255 -> object 1
    assert np.array_equal(lab == 1, raw == 255)


def test_palette_is_the_voc_colour_map() -> None:
    pal = np.array(davis_palette()).reshape(256, 3)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]
    assert pal[8].tolist() == [64, 0, 0]
    assert pal[255].tolist() == [224, 224, 192]  # DAVIS-2017's void colour


def test_write_read_indexed_png(tmp_path: Path) -> None:
    labels = np.zeros((6, 7), np.uint8)
    labels[1:3, 1:3] = 1
    labels[3:5, 4:6] = 3
    labels[0, 6] = VOID_LABEL
    path = write_davis_label(tmp_path / "seq" / "00000.png", labels)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:9] == [128, 0, 0, 0, 128, 0]
    assert np.array_equal(read_davis_label(path), labels)
    assert sorted(p.name for p in path.parent.iterdir()) == ["00000.png"]  # no temp file left
    masks = labels_to_masks(labels, [1, 3])
    assert masks.shape == (2, 6, 7) and masks[0].sum() == 4 and masks[1].sum() == 4


def test_folder_with_unannotated_frames(tmp_path: Path) -> None:
    for t in range(3):
        p = tmp_path / "JPEGImages" / "480p" / "s" / f"{t:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0] = 2
    write_davis_label(tmp_path / "Annotations" / "480p" / "s" / "00000.png", labels)
    (seq,) = list_davis_sequences(tmp_path)
    assert seq.label_paths[1] is None and seq.label(2) is None
    assert seq.object_ids() == [2]


def test_bad_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="DAVIS frame folder not found"):
        list_davis_sequences(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png: cannot read label PNG"):
        read_davis_label(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        write_davis_label(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
