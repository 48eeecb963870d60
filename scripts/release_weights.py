"""Turn a trained ``model.pt`` into a small release file (fp16 tensors, same meta).

    .venv/bin/python scripts/release_weights.py --weights runs/ship/model.pt \
        --out src/instseg/weights/demo_image.pt

The file loads with ``torch.load(weights_only=True)``; ``load_trained_model`` casts the fp16
tensors back to the parameters' dtypes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from instseg.engine.weights import read_weights_file
from instseg.utils.io import atomic_write


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--memory-length",
        type=int,
        default=None,
        help="PCAN only: the PCAM memory length T stored in the release's meta",
    )
    p.add_argument(
        "--config",
        default=None,
        help="image models: refresh meta.training from this training config (the run's "
        "config.yaml) - data provenance such as the held-out sequences, for files written "
        "before the recipe stored it",
    )
    p.add_argument(
        "--state-from",
        default=None,
        metavar="CKPT[:model|ema]",
        help="take the tensors from a training checkpoint (model_*.pth) instead: its raw "
        "weights ('model', default) or its EMA ('ema'), e.g. to compare the two; the meta "
        "still comes from --weights",
    )
    args = p.parse_args()
    state, meta = read_weights_file(args.weights)
    if args.state_from is not None:
        state = _checkpoint_state(args.state_from, like=state)
    if args.config is not None:
        if meta.task != "image":
            raise SystemExit(f"{args.weights}: --config is for image weights")
        from instseg.config import load_config
        from instseg.recipes.image import training_provenance
        from instseg.recipes.image_config import ImageTrainConfig

        cfg = load_config(ImageTrainConfig, args.config)
        meta = dataclasses.replace(meta, training={**meta.training, **training_provenance(cfg)})
    if args.memory_length is not None:
        if meta.task != "video":
            raise SystemExit(f"{args.weights}: --memory-length is for PCAN (task: video) weights")
        meta = dataclasses.replace(meta, model={**meta.model, "memory_length": args.memory_length})
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = atomic_write(
        Path(args.out), lambda f: torch.save({"model": half, "meta": meta.to_dict()}, f)
    )
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(half)} tensors)")


def _checkpoint_state(spec: str, *, like: dict) -> dict:
    from instseg.engine.checkpoint import load_checkpoint_file

    path, _, key = spec.partition(":")
    key = key or "model"
    if key not in ("model", "ema"):
        raise SystemExit(f"--state-from {spec}: the part after ':' must be 'model' or 'ema'")
    data = load_checkpoint_file(path)
    if key not in data:
        raise SystemExit(f"{path}: no '{key}' entry (keys: {', '.join(sorted(data))})")
    state = data[key]
    if key == "ema":  # AveragedModel layout: module.<name> + n_averaged
        state = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
    if set(state) != set(like):
        raise SystemExit(f"{path}: its '{key}' tensors do not match the --weights file's")
    return state


if __name__ == "__main__":
    main()
