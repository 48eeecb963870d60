"""The weights-file format: typed meta round trip, the layouts of files written before it,
task checks with clear errors, and the table of shipped files."""

from __future__ import annotations

import pytest
import torch

from instseg.engine.checkpoint import save_weights
from instseg.engine.weights import (
    SHIPPED,
    TASKS,
    WeightsMeta,
    read_weights_file,
    save_weights_file,
    shipped_weights,
)


def test_round_trip_typed_meta(tmp_path):
    meta = WeightsMeta(
        task="image",
        model={"name": "effl0_fcos_maskrcnn", "pretrained": False, "roi_aligned": True},
        num_classes=2,
        category_ids=(3, 7),
        class_names=("a", "b"),
        test_min_size=64,
        max_size=96,
        precision={"amp": "auto", "resolved": "fp32"},
        training={"seed": 0},
    )
    path = save_weights_file(torch.nn.Linear(2, 3), tmp_path / "w.pt", meta, half=True)
    raw = torch.load(path, weights_only=True)
    assert raw["meta"]["category_ids"] == [3, 7]  # plain values on disk
    state, back = read_weights_file(path, task="image")
    assert back == meta
    assert state["weight"].dtype == torch.float16


def test_old_layouts_still_load(tmp_path):
    flat_prop = {"kind": "propagation_embedding", "channels": 112, "hidden": 64, "seed": 0}
    m = WeightsMeta.from_dict(flat_prop)
    assert m.task == "propagation" and m.model == {"channels": 112, "hidden": 64}
    assert m.training == {"seed": 0}
    flat_voin = {
        "task": "voin",
        "format": "instseg-voin-1",
        "variant": "small",
        "num_classes": 1,
        "canvas_size": 32,
        "trained": True,
        "iterations": {"g": 3},
    }
    v = WeightsMeta.from_dict(flat_voin)
    assert v.model == {"variant": "small", "canvas_size": 32, "format": "instseg-voin-1"}
    assert v.trained and v.num_classes == 1 and v.training == {"iterations": {"g": 3}}
    image = WeightsMeta.from_dict({"model": {"name": "x"}, "num_classes": 3})  # no "task"
    assert image.task == "image" and image.num_classes == 3


def test_models_without_roi_aligned_are_legacy_pooling():
    """Image/video models written before aligned mask RoI pooling read as roi_aligned=False
    (what they were trained with); an explicit value is kept; other tasks are untouched."""
    old = WeightsMeta.from_dict({"task": "image", "model": {"name": "effl0_fcos_maskrcnn"}})
    assert old.model == {"name": "effl0_fcos_maskrcnn", "roi_aligned": False}
    assert WeightsMeta.from_dict({"task": "video", "model": {}}).model == {"roi_aligned": False}
    new = WeightsMeta.from_dict({"task": "image", "model": {"name": "x", "roi_aligned": True}})
    assert new.model["roi_aligned"] is True
    prop = WeightsMeta.from_dict({"task": "propagation", "model": {"channels": 8, "hidden": 4}})
    assert "roi_aligned" not in prop.model


def test_errors_name_the_file(tmp_path):
    path = save_weights(torch.nn.Linear(2, 2), tmp_path / "v.pt", meta={"task": "video"})
    with pytest.raises(ValueError, match=r"v\.pt: weights are for task 'video', not 'image'"):
        read_weights_file(path, task="image")
    bad = save_weights(torch.nn.Linear(2, 2), tmp_path / "b.pt", meta={"task": "sound"})
    with pytest.raises(ValueError, match=r"b\.pt: bad weights meta: .*'sound'"):
        read_weights_file(bad)
    torch.save({"weights": {}}, tmp_path / "n.pt")
    with pytest.raises(ValueError, match=r"n\.pt: not an instseg weights file"):
        read_weights_file(tmp_path / "n.pt")


def test_shipped_table():
    assert set(SHIPPED) == set(TASKS)
    for task, path in SHIPPED.items():
        assert shipped_weights(task) == path
        if path.is_file():  # every shipped file reads as its task and has a model card
            _, meta = read_weights_file(path, task=task)
            assert meta.task == task and path.with_suffix(".md").is_file()
    with pytest.raises(ValueError, match="no shipped weights"):
        shipped_weights("sound")
