"""Run under torchrun: COCO evaluation on a small synthetic split with the test loader sharded
across ranks; rank 0 writes the gathered metrics to argv[2] (results.json beside it).
argv[3]: "model" (a fixed untrained model) or "oracle" (returns the ground truth)."""

import json
import sys
from pathlib import Path

import torch

from instseg.data.coco import CocoInstanceDataset
from instseg.data.transforms import build_transforms
from instseg.engine import distributed as dist
from instseg.models.build import ModelConfig, build_model_from_config
from instseg.recipes.image import evaluate


class Oracle(torch.nn.Module):
    """Predicts each image's ground truth with score 1."""

    def predict(self, batch):  # noqa: ANN001, ANN201
        return [t.replace(scores=torch.ones(len(t))) for t in batch.targets]


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_distributed()
    torch.set_num_threads(1)
    ds = CocoInstanceDataset(
        root / "annotations.json",
        root,
        transforms=build_transforms(train=False, min_size=(64,), max_size=96),
    )
    torch.manual_seed(0)
    if sys.argv[3] == "oracle":
        model: torch.nn.Module = Oracle()
    else:
        model = build_model_from_config(
            ModelConfig(pretrained=False, frozen_bn=True),
            num_classes=len(ds.category_ids),
            score_thresh=0.0,
        )
    metrics = evaluate(
        model, ds, root / "annotations.json", amp="none", out_dir=out.parent, progress=False
    )
    if dist.is_main_process():
        out.write_text(json.dumps(metrics))
    dist.cleanup()


if __name__ == "__main__":
    main()
