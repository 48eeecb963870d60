"""Seeded K-shot subsets (sample_k_shot) and the ``data few-shot`` sub-command."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from instseg.cli import data_fewshot
from instseg.data.few_shot import sample_k_shot

BASE, NOVEL_A, NOVEL_B, NOVEL_RARE = 1, 2, 3, 4


def _coco(seed: int = 0, num_images: int = 40) -> dict:
    """Random image contents: 0-3 instances of each class per image; class 4 is rare (3 in
    all); a few crowd annotations."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i}.png", "height": 32, "width": 32})
        for c in (BASE, NOVEL_A, NOVEL_B):
            for _ in range(int(rng.integers(0, 4))):
                anns.append({"image_id": i, "category_id": c, "iscrowd": 0})
        if i % 9 == 0:
            anns.append({"image_id": i, "category_id": NOVEL_A, "iscrowd": 1})
            anns.append({"image_id": i, "category_id": BASE, "iscrowd": 1})
    for i in (3, 5, 5):
        anns.append({"image_id": i, "category_id": NOVEL_RARE, "iscrowd": 0})
    for j, a in enumerate(anns, 1):
        a.update(id=j, bbox=[0, 0, 4, 4], area=16)
    cats = [{"id": c, "name": f"c{c}"} for c in (BASE, NOVEL_A, NOVEL_B, NOVEL_RARE)]
    return {"info": {"v": 1}, "images": images, "annotations": anns, "categories": cats}


def _count(anns: list[dict], **match) -> Counter:
    return Counter(
        a["category_id"] for a in anns if all(a.get(k, 0) == v for k, v in match.items())
    )


@pytest.mark.parametrize("k", [10, 20])
@pytest.mark.parametrize("keep_base", [True, False])
def test_k_shots_per_novel_class_and_base_handling(k, keep_base):
    data = _coco()
    novel = [NOVEL_A, NOVEL_B, NOVEL_RARE]
    out = sample_k_shot(data, novel_ids=novel, k=k, seed=0, keep_base=keep_base)
    counts = _count(out["annotations"], iscrowd=0)
    assert counts[NOVEL_A] == k and counts[NOVEL_B] == k
    assert counts[NOVEL_RARE] == 3  # fewer than K in the data: all of them
    assert out["few_shot"]["novel_counts"] == {"2": k, "3": k, "4": 3}
    assert not any(a["iscrowd"] for a in out["annotations"] if a["category_id"] in novel)
    all_base = [a for a in data["annotations"] if a["category_id"] == BASE]
    kept_base = [a for a in out["annotations"] if a["category_id"] == BASE]
    assert kept_base == (all_base if keep_base else [])  # crowd included, order kept
    used = {a["image_id"] for a in out["annotations"]}
    assert [im["id"] for im in out["images"]] == sorted(used)
    assert out["categories"] == data["categories"] and out["info"] == data["info"]
    ids = [a["id"] for a in out["annotations"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_images_are_taken_whole_except_at_most_one_per_class():
    data = _coco(seed=3)
    out = sample_k_shot(data, novel_ids=[NOVEL_A, NOVEL_B], k=10, seed=7, keep_base=False)
    for c in (NOVEL_A, NOVEL_B):
        total = Counter(
            a["image_id"] for a in data["annotations"] if a["category_id"] == c and not a["iscrowd"]
        )
        kept = Counter(a["image_id"] for a in out["annotations"] if a["category_id"] == c)
        partial = [im for im, n in kept.items() if n != total[im]]
        assert len(partial) <= 1


def test_partial_image_when_no_whole_image_fits():
    anns = [{"id": j, "image_id": 1 + (j > 3), "category_id": 2, "iscrowd": 0} for j in range(1, 7)]
    data = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": anns,  # 3 instances in each image, K = 4
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    out = sample_k_shot(data, novel_ids=[2], k=4, seed=0)
    per_image = Counter(a["image_id"] for a in out["annotations"])
    assert sorted(per_image.values()) == [1, 3]


def test_seeded_and_reproducible():
    data = _coco()
    a = sample_k_shot(data, novel_ids=[NOVEL_A, NOVEL_B], k=10, seed=0)
    b = sample_k_shot(data, novel_ids=[NOVEL_A, NOVEL_B], k=10, seed=0)
    c = sample_k_shot(data, novel_ids=[NOVEL_A, NOVEL_B], k=10, seed=1)
    assert a == b
    assert [x["id"] for x in a["annotations"]] != [x["id"] for x in c["annotations"]]
    # classes are drawn independently: adding a class does not change another's shots
    only_a = sample_k_shot(data, novel_ids=[NOVEL_A], k=10, seed=0, keep_base=False)
    a_shots = [x["id"] for x in a["annotations"] if x["category_id"] == NOVEL_A]
    assert a_shots == [x["id"] for x in only_a["annotations"]]


def test_bad_input(tmp_path):
    data = _coco()
    with pytest.raises(ValueError, match="not in 'categories'"):
        sample_k_shot(data, novel_ids=[99], k=10, seed=0)
    with pytest.raises(ValueError, match="k must be"):
        sample_k_shot(data, novel_ids=[NOVEL_A], k=0, seed=0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"bad\.json.*annotations"):
        sample_k_shot(bad, novel_ids=[NOVEL_A], k=10, seed=0)
    data["annotations"].append({"id": 999, "image_id": 12345, "category_id": NOVEL_A})
    with pytest.warns(UserWarning, match="1 annotations refer to unknown image ids"):
        out = sample_k_shot(data, novel_ids=[NOVEL_A], k=10, seed=0)
    assert out["few_shot"]["skipped_annotations"] == 1


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add, run, help_text = data_fewshot.SUBCOMMANDS["few-shot"]
    assert "K-shot" in help_text
    add(parser)
    return run(parser.parse_args(argv))


def test_cli_writes_the_subset(tmp_path, capsys):
    data = _coco()
    data["categories"] = [
        {"id": BASE, "name": "laptop"}, {"id": NOVEL_A, "name": "cat"},
        {"id": NOVEL_B, "name": "dog"}, {"id": NOVEL_RARE, "name": "tv"},
    ]  # fmt: skip
    gt, out = tmp_path / "gt.json", tmp_path / "sub" / "10shot.json"
    gt.write_text(json.dumps(data))
    assert _cli(["--gt", str(gt), "--k", "10", "--seed", "0", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written == sample_k_shot(data, novel_ids=[2, 3, 4], k=10, seed=0, keep_base=True)
    assert "fewer than 10 instances in the data: 4" in capsys.readouterr().out
    assert _cli(["--gt", str(gt), "--k", "10", "--out", str(out), "--no-base"]) == 0
    assert not _count(json.loads(out.read_text())["annotations"])[BASE]
    rc = _cli(["--gt", str(gt), "--k", "10", "--out", str(out), "--split", "base->novel"])
    assert rc == 2 and "split=None" in capsys.readouterr().err
    rc = _cli(["--gt", str(tmp_path / "missing.json"), "--k", "10", "--out", str(out)])
    assert rc == 2 and "missing.json: file not found" in capsys.readouterr().err
