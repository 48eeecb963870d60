"""Train the learned VOIN stages and pack them into one weights file (runs end to end on tiny
settings on a CPU).

One command, all three stages, one weights file (``--out/voin.pt``, fp16, the format of
:func:`instseg.inference.inpainter.save_voin_weights`, loaded by ``instseg inpaint --weights``)::

    # tiny smoke run (about 1-2 minutes on one CPU core)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_voin.py --stage all --tiny --iters 30 \
        --seed 0 --out runs/voin_tiny
    # paper-sized networks (needs a GPU for a useful schedule); the shipped
    # src/instseg/weights/voin_default.pt is a small CPU run, commands in its model card
    .venv/bin/python scripts/train_voin.py --stage all --variant paper --iters-shape 20000 \
        --iters-flow 20000 --iters-generator 50000 --size 192 --batch 4 --seed 0 --out runs/voin

Single stages (each writes ``--out/model_final.pth``, engine checkpoint format) and packing::

    .venv/bin/python scripts/train_voin.py --stage shape --tiny --iters 20 --out runs/shape
    .venv/bin/python scripts/train_voin.py --stage pack --tiny --from runs/voin_tiny

Data (self-supervised, Sect. 5.4.4): random clips of the DAVIS-2016 train subset, resized to
``--size`` pixels high; a synthetic occluder (:func:`synthetic_occluder`) moves over the object
(:func:`occlude_clip`, 20-50 % occlusion); the annotated (modal) mask is the amodal target.
DAVIS has no class labels, so every object is class 0 (``num_classes = 1``). The default
sequences leave out boat, bus and elephant: they are the held-out evaluation sequences of
``scripts/voin_baselines.py`` / ``scripts/repro_voin.py``.

Stages (each trains one network; the pipeline :class:`VOIN` combines them at inference):

- ``shape``: :class:`AmodalShapeCompletion` on the object canvas, BCE + dice.
- ``flow``: :class:`FlowCompletionNet`; input DIS flow of the *corrupted* frames, target the DIS
  flow of the *clean* frames (a pseudo ground truth, as in ``voin_baselines.py``); loss inside
  the amodal mask: L1 + gradient + Laplacian pyramid + 0.1 x warping (clean frames).
- ``generator``: :class:`OcclusionAwareGenerator` with T-PatchGAN and the multi-class STAM
  discriminator, hinge + multi-class adversarial losses (weight 0.01 each, STTN's value) and L1
  hole / valid (weight 1 each). The hole is the whole occluded region (at inference the
  generator sees the propagation leftovers, a subset).

``shape`` and ``flow`` use the engine's :class:`Trainer`; the GAN loop alternates D and G steps
by hand (two optimizers). ``--stage all`` trains them one after the other into
``--out/{shape,flow,generator}/`` (seeded ``--seed``, ``--seed + 1``, ``--seed + 2``) and packs
``--out/voin.pt``; ``--stage pack`` packs existing stage folders of ``--from``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from instseg.data.davis_splits import VOIN_EVAL, VOIN_TRAIN
from instseg.data.video_occlusion import (
    OccludedClip,
    load_davis_sequence,
    occlude_clip,
    synthetic_occluder,
)
from instseg.engine.checkpoint import Checkpointer
from instseg.engine.trainer import Trainer, seed_everything
from instseg.models.inpainting.discriminators import (
    MultiClassDiscriminator,
    TPatchGAN,
    hinge_d_loss,
    hinge_g_loss,
    multiclass_d_loss,
    multiclass_g_loss,
    reconstruction_losses,
)
from instseg.models.inpainting.flow import clip_flows, fill_object_flow
from instseg.models.inpainting.flow_completion import FlowCompletionNet, flow_completion_losses
from instseg.models.inpainting.shape_completion import (
    AmodalShapeCompletion,
    crop_to_canvas,
    object_canvas,
    shape_completion_loss,
)
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINNets
from instseg.utils.precision import AMP_CHOICES, autocast

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_ROOT = DEFAULT_ROOT / "davis2016-train-subset"
EVAL_SEQUENCES = VOIN_EVAL  # held out: scripts/voin_baselines.py, repro_voin.py
SEQUENCES = VOIN_TRAIN


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tiny:
        args.size, args.frames_per_seq, args.clip_len = 48, 8, 3
        args.sequences = args.sequences[:2]
        args.variant = "small"
    if args.stage == "pack":
        path = pack(args.from_dir, args)
        print(f"packed: {path}")
        return 0
    if args.stage == "all":
        out = args.out
        for i, stage in enumerate(STAGES):
            sub = argparse.Namespace(**{**vars(args), "out": out / stage, "seed": args.seed + i})
            sub.iters = getattr(args, f"iters_{stage}") or args.iters
            _train_stage(stage, sub)
        path = pack(out, args)
        print(f"done: {path}")
        return 0
    _train_stage(args.stage, args)
    print(f"done: {args.out / 'model_final.pth'}")
    return 0


STAGES = ("shape", "flow", "generator")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=(*STAGES, "all", "pack"), required=True)
    p.add_argument(
        "--variant",
        choices=sorted(VOIN_VARIANTS),
        default="paper",
        help="network sizes (--tiny forces 'small')",
    )
    p.add_argument("--davis-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--sequences", nargs="+", default=list(SEQUENCES))
    p.add_argument(
        "--frames-per-seq", type=int, default=40, help="first N frames per sequence (0: all)"
    )
    p.add_argument("--iters", type=int, default=1000)
    for stage in STAGES:
        p.add_argument(
            f"--iters-{stage}",
            type=int,
            default=None,
            help=f"iterations of the {stage} stage with --stage all (default --iters)",
        )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clip-len", type=int, default=5)
    p.add_argument("--size", type=int, default=128, help="frame height after resizing")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--tiny", action="store_true", help="tiny networks and data (smoke run)")
    p.add_argument("--out", type=Path, default=Path("runs/voin"))
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        default=None,
        help="--stage pack: folder holding shape/, flow/, generator/",
    )
    p.add_argument("--weights-name", default="voin.pt", help="packed file name inside the folder")
    p.add_argument("--full-precision", action="store_true", help="pack fp32 instead of fp16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--amp", choices=AMP_CHOICES, default="auto",
        help="autocast for the discriminators of the generator stage (auto: bf16 only where "
        "the hardware runs it natively)",
    )  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def _train_stage(stage: str, args: argparse.Namespace) -> None:
    seed_everything(args.seed)
    videos = load_videos(args.davis_root, args.sequences, args.frames_per_seq, args.size)
    clips = clip_stream(videos, np.random.default_rng(args.seed), args.clip_len)
    {"shape": train_shape, "flow": train_flow, "generator": train_generator}[stage](args, clips)


def pack(folder: Path, args: argparse.Namespace) -> Path:
    """Load ``folder/{shape,flow,generator}/model_final.pth`` into the variant's networks and
    write ``folder/<weights-name>`` (one file, fp16 unless ``--full-precision``)."""
    from instseg.engine.checkpoint import load_checkpoint_file, load_model_weights
    from instseg.inference.inpainter import save_voin_weights

    if folder is None:
        raise SystemExit("--stage pack needs --from FOLDER")
    nets = _nets(args)
    iters = {}
    for stage, net in zip(STAGES, (nets.shape_net, nets.flow_net, nets.generator), strict=True):
        path = folder / stage / "model_final.pth"
        load_model_weights(net, path)  # strict: raises naming the file on any mismatch
        iters[stage] = int(load_checkpoint_file(path).get("iteration", 0))
    meta = {
        "iterations": iters,
        "seed": args.seed,
        "train_size": args.size,
        "clip_len": args.clip_len,
        "batch": args.batch,
        "train_sequences": list(args.sequences),
        "held_out_sequences": list(EVAL_SEQUENCES),
        "data": "davis2016-train-subset + synthetic occluders (scripts/train_voin.py)",
    }
    return save_voin_weights(
        nets,
        folder / args.weights_name,
        variant=args.variant,
        num_classes=1,
        canvas_size=_canvas(args),
        trained=min(iters.values()) > 0,
        half=not args.full_precision,
        meta=meta,
    )


def _canvas(args: argparse.Namespace) -> int:
    return 32 if args.variant == "small" else 64


# ----------------------------------------------------------------------------------------- data
def load_videos(
    root: Path, names: list[str], num_frames: int, height: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frames (T, h, w, 3) uint8, masks (T, h, w) bool) per sequence, resized to ``height``
    (width rounded to a multiple of 4); at most ``num_frames`` per sequence (0: all)."""
    if not (root / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{root}: not a DAVIS root (no JPEGImages/)")
    out = []
    for name in names:
        available = len(list((root / "JPEGImages" / "480p" / name).glob("*.jpg")))
        frames, masks, _ = load_davis_sequence(
            root, name, num_frames=min(num_frames, available) if num_frames > 0 else None
        )
        h, w = frames.shape[1:3]
        size = (max(4, round(w * height / h / 4) * 4), height)
        fr = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        ms = np.stack(
            [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks]
        ).astype(bool)
        out.append((fr, ms))
    return out


def clip_stream(
    videos: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, clip_len: int
) -> Iterator[OccludedClip]:
    """Endless occluded clips (object visible in every frame, some pixels occluded)."""
    while True:
        frames, masks = videos[int(rng.integers(len(videos)))]
        s = int(rng.integers(len(frames) - clip_len + 1))
        fr, ms = frames[s : s + clip_len], masks[s : s + clip_len]
        if not ms.any((1, 2)).all():
            continue
        clip = occlude_clip(
            fr,
            ms,
            synthetic_occluder(rng, size=48),
            rng=rng,
            occlusion_ratio=float(rng.uniform(0.2, 0.5)),
        )
        if clip.holes.any() and clip.visible.any((1, 2)).all():
            yield clip


def shape_batches(clips: Iterator[OccludedClip], batch: int, canvas: int) -> Iterator[dict]:
    while True:
        vis, gt = [], []
        for _ in range(batch):
            clip = next(clips)
            v, boxes = object_canvas(clip.visible, size=canvas)
            vis.append(v)
            gt.append(crop_to_canvas(clip.amodal, boxes, size=canvas) > 0.5)
        yield {
            "visible": torch.from_numpy(np.stack(vis))[:, :, None],
            "amodal": torch.from_numpy(np.stack(gt))[:, :, None].float(),
            "labels": torch.zeros(batch, dtype=torch.long),
        }


def flow_batches(clips: Iterator[OccludedClip], batch: int) -> Iterator[dict]:
    def t(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    while True:
        items = []
        for _ in range(batch):
            c = next(clips)
            init, _ = clip_flows(c.frames[:2], preset="medium")
            gt, _ = clip_flows(c.clean[:2], preset="medium")
            i = 0
            # the same initial completion as at inference (VOIN.complete_flows, fill_flow=True)
            init = init.copy()
            init[i] = fill_object_flow(init[i], c.holes[i], c.visible[i])
            items.append(
                (
                    c.frames[i],
                    c.frames[i + 1],
                    init[i],
                    gt[i],
                    c.clean[i],
                    c.clean[i + 1],
                    c.visible[i],
                    c.amodal[i],
                )
            )
        cols = [t(np.stack(col)) for col in zip(*items, strict=True)]
        img = [x.permute(0, 3, 1, 2).float() / 255 for x in (cols[0], cols[1], cols[4], cols[5])]
        yield {
            "frame_a": img[0],
            "frame_b": img[1],
            "clean_a": img[2],
            "clean_b": img[3],
            "flow": cols[2].permute(0, 3, 1, 2),
            "gt": cols[3].permute(0, 3, 1, 2),
            "visible": cols[6][:, None].float(),
            "amodal": cols[7][:, None].float(),
        }


def video_batches(clips: Iterator[OccludedClip], batch: int) -> Iterator[dict]:
    while True:
        cs = [next(clips) for _ in range(batch)]
        yield {
            k: _stack_video([getattr(c, k) for c in cs])
            for k in ("frames", "gt", "holes", "amodal")
        }


def _stack_video(arrays: list[np.ndarray]) -> Tensor:
    """(T, H, W, 3) uint8 -> (B, T, 3, H, W) in [-1, 1]; (T, H, W) bool -> (B, T, 1, H, W)."""
    a = torch.from_numpy(np.stack(arrays))
    if a.ndim == 5:
        return a.permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    return a[:, :, None].float()


# --------------------------------------------------------------------------------------- stages
class ShapeStage(nn.Module):
    def __init__(self, net: AmodalShapeCompletion) -> None:
        super().__init__()
        self.net = net

    def loss(self, b: dict) -> dict[str, Tensor]:
        return shape_completion_loss(self.net(b["visible"], b["labels"]), b["amodal"])


class FlowStage(nn.Module):
    def __init__(self, net: FlowCompletionNet, warping_weight: float = 0.1) -> None:
        super().__init__()
        self.net, self.warping_weight = net, warping_weight

    def loss(self, b: dict) -> dict[str, Tensor]:
        pred = self.net(b["frame_a"], b["frame_b"], b["flow"], b["visible"], b["amodal"])
        terms = flow_completion_losses(
            pred, b["gt"], mask=b["amodal"], frame_a=b["clean_a"], frame_b=b["clean_b"]
        )
        terms["warping"] = self.warping_weight * terms["warping"]
        return terms


def _nets(args: argparse.Namespace) -> VOINNets:
    return VOIN_VARIANTS["small" if args.tiny else args.variant](num_classes=1)


def _run_trainer(args: argparse.Namespace, stage: nn.Module, loader: Iterator[dict]) -> None:
    stage.to(args.device)
    opt = torch.optim.Adam(stage.parameters(), lr=args.lr)
    ckpt = Checkpointer(stage.net, optimizer=opt, save_dir=args.out)  # plain net weights
    Trainer(
        model=stage,
        optimizer=opt,
        data_loader=loader,
        max_iters=args.iters,
        device=args.device,
        amp="none",  # the shape and flow stages train in fp32 (as the shipped model's card says)
        checkpointer=ckpt,
        out_dir=args.out,
        log_period=10,
    ).train()


def train_shape(args: argparse.Namespace, clips: Iterator[OccludedClip]) -> None:
    net = _nets(args).shape_net
    _run_trainer(args, ShapeStage(net), shape_batches(clips, args.batch, _canvas(args)))


def train_flow(args: argparse.Namespace, clips: Iterator[OccludedClip]) -> None:
    net = _nets(args).flow_net
    _run_trainer(args, FlowStage(net), flow_batches(clips, args.batch))


def train_generator(args: argparse.Namespace, clips: Iterator[OccludedClip]) -> None:
    dev = torch.device(args.device)
    small = args.tiny or args.variant == "small"
    c = 8 if small else 64
    gen = _nets(args).generator.to(dev)
    d_patch = TPatchGAN(base_channels=c, downsample=3 if small else 6).to(dev)
    d_cls = MultiClassDiscriminator(num_classes=1, base_channels=c).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(
        [*d_patch.parameters(), *d_cls.parameters()], lr=args.lr, betas=(0.0, 0.99)
    )
    batches = video_batches(clips, args.batch)

    def amp() -> contextlib.AbstractContextManager:
        return autocast(args.amp, dev)

    for it in tqdm(range(args.iters), desc="generator"):
        b = {k: v.to(dev) for k, v in next(batches).items()}
        labels = torch.zeros(len(b["frames"]), dtype=torch.long, device=dev)
        out = gen.inpaint(b["frames"], b["holes"], b["holes"], b["amodal"])
        real = torch.cat([b["gt"], b["holes"]], dim=2)
        fake = torch.cat([out, b["holes"]], dim=2)
        real_c = torch.cat([b["gt"], b["amodal"]], dim=2)
        fake_c = torch.cat([out, b["amodal"]], dim=2)
        with amp():  # the 3D-conv discriminators: bf16 is 7-17x faster on bf16-native CPUs
            d_loss = hinge_d_loss(d_patch(real), d_patch(fake.detach())) + multiclass_d_loss(
                d_cls(real_c), d_cls(fake_c.detach()), labels
            )
        opt_d.zero_grad()
        d_loss.float().backward()
        opt_d.step()
        rec = reconstruction_losses(out, b["gt"], b["holes"])
        with amp():
            adv = 0.01 * (hinge_g_loss(d_patch(fake)) + multiclass_g_loss(d_cls(fake_c), labels))
        adv = adv.float()
        g_loss = rec["l1_hole"] + rec["l1_valid"] + adv
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if it % 10 == 0:
            tqdm.write(
                f"it {it}: d {d_loss.item():.3f} l1_hole {rec['l1_hole'].item():.3f} "
                f"l1_valid {rec['l1_valid'].item():.3f} adv {adv.item():.4f}"
            )
    Checkpointer(gen, optimizer=opt_g, save_dir=args.out).save("model_final", iteration=args.iters)


if __name__ == "__main__":
    raise SystemExit(main())
