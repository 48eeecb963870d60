"""JSON readers: one checker for the top-level shape of COCO / YouTube-VIS style files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instseg.utils.errors import InvalidInputError, MissingFileError
from instseg.utils.io import atomic_write_json, read_json, require_lists


def test_require_lists_names_the_file_and_the_problem(tmp_path: Path) -> None:
    good = {"images": [], "annotations": [{"id": 1}]}
    assert require_lists(good, "gt.json", ("images", "annotations")) is good
    with pytest.raises(ValueError, match=r"gt.json: top level must be a JSON object \(COCO"):
        require_lists([1, 2], "gt.json", ("images",))
    with pytest.raises(ValueError, match=r"gt.json: missing or invalid key 'annotations'"):
        require_lists({"images": [], "annotations": {}}, "gt.json", ("images", "annotations"))
    with pytest.raises(ValueError, match=r"v.json: missing or invalid key 'videos' \(YouTube-VIS"):
        require_lists({}, "v.json", ("videos",), fmt="YouTube-VIS format")


def test_read_json_errors_and_atomic_round_trip(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert read_json(path) == {"x": [1, 2]} and not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(MissingFileError, match="b.json: file not found"):
        read_json(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{'x': 1}")
    with pytest.raises(InvalidInputError, match="c.json: invalid JSON"):
        read_json(tmp_path / "c.json")
    assert json.loads(Path(path).read_text()) == {"x": [1, 2]}
