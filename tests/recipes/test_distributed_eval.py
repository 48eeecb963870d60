import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instseg.data.synthetic import generate_scenes

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, num_images=7, seed=3, image_size=(64, 80), cutout_root=None)
    return root


def _run(scenes: Path, out: Path, nproc: int, kind: str = "model") -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        "--standalone", str(HERE / "_ddp_coco_worker.py"), str(scenes), str(out), kind,
    ]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def _results(folder: Path) -> list:
    res = json.loads((folder / "results.json").read_text())
    return sorted(res, key=lambda r: (r["image_id"], -r["score"], r["bbox"]))


def test_two_process_coco_evaluation_equals_single_process(scenes, tmp_path):
    """7 images split 4 + 3 over two ranks, gathered on rank 0: the same detections and the
    same COCO metrics as one process."""
    single = _run(scenes, tmp_path / "a" / "m.json", 1)
    double = _run(scenes, tmp_path / "b" / "m.json", 2)
    assert set(single) == {"bbox", "segm"}
    assert single == double
    res = _results(tmp_path / "a")
    assert len(res) > 100 and len({r["image_id"] for r in res}) == 7
    assert res == _results(tmp_path / "b")


def test_two_process_oracle_scores_100(scenes, tmp_path):
    """Ground truth as predictions gives AP 100 only if every rank's images are gathered."""
    metrics = _run(scenes, tmp_path / "m.json", 2, kind="oracle")
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["bbox"]["AR100"] == pytest.approx(100.0)
