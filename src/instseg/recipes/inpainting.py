"""VOIN recipe: the three learned stages of video object inpainting, trained on self-supervised
DAVIS clips and packed into one weights file for ``instseg inpaint --weights``.

Data (Sect. 5.4.4): random clips of the DAVIS-2016 train subset, resized to the stage's
``size`` pixels high; a synthetic occluder moves over the object (20-50 % occlusion,
:mod:`instseg.data.occluded_clips`); the annotated (modal) mask is the amodal target. DAVIS has
no class labels, so every object is class 0 (``num_classes = 1``).

Each stage records the frame height it trains at in ``<out_dir>/<stage>/stage.json``; packing
writes them to the weights file's ``model.stage_sizes`` (inference feeds the generator crops of
at most its trained height).

Stages (each trains one network; the pipeline :class:`~instseg.models.inpainting.voin.VOIN`
combines them at inference), each into ``<out_dir>/<stage>/`` (engine checkpoints,
``model_final.pth``), stage i seeded ``seed + i``:

- ``shape``: :class:`AmodalShapeCompletion` on the object canvas, BCE + dice
  (:class:`~instseg.models.inpainting.training_stages.ShapeStage`, engine Trainer, fp32).
- ``flow``: :class:`FlowCompletionNet`; input DIS flow of the *corrupted* frames, target the DIS
  flow of the *clean* frames (pseudo ground truth); L1 + gradient + Laplacian + 0.1 x warping
  inside the amodal mask (:class:`FlowStage`, engine Trainer, fp32).
- ``generator``: :class:`OcclusionAwareGenerator` with T-PatchGAN and the multi-class STAM
  discriminator (:func:`~instseg.recipes.inpainting_gan.train_generator_gan`). With
  ``generator_mode: leftover`` it is the residual leftover generator (issue 16), trained on
  cached propagation leftovers of ``data.sequences``
  (:mod:`~instseg.recipes.inpainting_leftovers`, settings ``leftover.*``) at crops whose longer
  side is ``generator.size`` (recorded, with the mode, in ``stage.json`` and the packed meta),
  L1 hole + valid on the raw output, the adversarial terms from iteration ``adv_start``.

``stage: all`` trains the three in turn and packs ``<out_dir>/<weights_name>`` (fp16, the
format of :func:`instseg.inference.inpainter.save_voin_weights`); ``stage: pack`` packs the
stage folders of ``pack_from`` (stages without a ``model_final.pth`` there come from the weights
file ``pack_base`` when given). Every stage resumes (``--resume``) from its folder's
``last_checkpoint``, the clip stream skipped to the resumed iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instseg.config import ConfigError
from instseg.data.davis import resolve_davis_root
from instseg.data.davis_splits import VOIN_EVAL
from instseg.data.occluded_clips import load_resized_videos, occluded_clip_stream, video_batches
from instseg.models.inpainting.generator import GENERATOR_MODES
from instseg.models.inpainting.training_stages import FlowStage, ShapeStage
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINNets
from instseg.recipes.inpainting_batches import flow_batches, shape_batches
from instseg.recipes.inpainting_config import STAGES, InpaintingDataConfig, InpaintingTrainConfig
from instseg.recipes.inpainting_gan import train_generator_gan
from instseg.recipes.inpainting_leftovers import (
    build_leftover_cache,
    leftover_batches,
    load_leftover_cache,
)
from instseg.recipes.runner import TrainingRun
from instseg.utils.io import atomic_write_json

__all__ = [
    "canvas_size",
    "effective_config",
    "pack_voin",
    "stage_size",
    "train_inpainting",
    "train_voin_stage",
    "voin_nets",
    "write_stage_record",
]

log = logging.getLogger(__name__)
CHOICES = (*STAGES, "all", "pack")
STAGE_NETS = {"shape": "shape_net", "flow": "flow_net", "generator": "generator"}


def train_inpainting(
    cfg: InpaintingTrainConfig, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run ``cfg.stage`` (see module docstring); returns ``{"weights": packed file}`` after
    ``all`` / ``pack``, ``{"checkpoint": model_final.pth}`` after a single stage."""
    cfg = effective_config(cfg)
    out = Path(cfg.out_dir)
    if cfg.stage == "pack":
        return {"weights": str(pack_voin(cfg, Path(cfg.pack_from) if cfg.pack_from else out))}
    stages = STAGES if cfg.stage == "all" else (cfg.stage,)
    final = out
    for stage in stages:
        final = train_voin_stage(
            cfg,
            stage,
            out_dir=out / stage,
            seed=cfg.seed + STAGES.index(stage),
            resume=resume,
            progress=progress,
        )
    if cfg.stage != "all":
        return {"checkpoint": str(final)}
    path = pack_voin(cfg, out)
    log.info("packed %s", path)
    return {"weights": str(path)}


def effective_config(cfg: InpaintingTrainConfig) -> InpaintingTrainConfig:
    """A checked copy of ``cfg`` with ``tiny`` applied (small networks, 48-pixel frames, 8
    frames of the first two sequences, 3-frame clips). ConfigError for a bad stage / variant."""
    if cfg.stage not in CHOICES:
        raise ConfigError(f"stage must be one of {', '.join(CHOICES)}, got {cfg.stage!r}")
    if cfg.variant not in VOIN_VARIANTS:
        raise ConfigError(f"variant must be one of {sorted(VOIN_VARIANTS)}, got {cfg.variant!r}")
    if cfg.generator_mode not in GENERATOR_MODES:
        raise ConfigError(
            f"generator_mode must be one of {GENERATOR_MODES}, got {cfg.generator_mode!r}"
        )
    cfg = copy.deepcopy(cfg)
    if cfg.tiny:
        cfg.variant = "small"
        cfg.data.size, cfg.data.frames_per_seq, cfg.data.clip_len = 48, 8, 3
        cfg.data.sequences = cfg.data.sequences[:2]
        for stage in STAGES:
            getattr(cfg, stage).size = 0
    return cfg


def voin_nets(cfg: InpaintingTrainConfig) -> VOINNets:
    """The variant's three untrained networks (one class; the generator in
    ``cfg.generator_mode``)."""
    return VOIN_VARIANTS[cfg.variant](num_classes=1, generator_mode=cfg.generator_mode)


def canvas_size(cfg: InpaintingTrainConfig) -> int:
    """Side of the shape network's object canvas: 32 for ``small`` / ``small_wide``, 64 for
    ``paper``."""
    return 64 if cfg.variant == "paper" else 32


def train_voin_stage(
    cfg: InpaintingTrainConfig,
    stage: str,
    *,
    out_dir: str | Path,
    seed: int,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train one stage (``shape`` | ``flow`` | ``generator``) into ``out_dir`` seeded ``seed``;
    returns ``out_dir/model_final.pth`` (engine checkpoint; ``model`` = the bare network)."""
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    cfg = effective_config(cfg)
    out_dir = Path(out_dir)
    sc = getattr(cfg, stage)
    amp = cfg.amp if stage == "generator" else "none"
    run = TrainingRun(
        cfg, out_dir=out_dir, seed=seed, device=cfg.device, amp=amp, threads=cfg.threads
    )
    d = cfg.data
    size = sc.size or d.size
    nets = voin_nets(cfg)
    batch = d.batch
    if stage == "generator" and cfg.generator_mode == "leftover":
        write_stage_record(out_dir, stage, size, mode="leftover")
        _train_leftover_generator(cfg, nets, out_dir=out_dir, seed=seed, run=run, resume=resume,
                                  progress=progress)  # fmt: skip
        return out_dir / "model_final.pth"
    write_stage_record(out_dir, stage, size)
    videos = load_resized_videos(_davis_roots(d), d.sequences, d.frames_per_seq, size)

    def clips(start_iter: int) -> Any:  # each step takes `batch` clips of the stream
        rng = np.random.default_rng(seed)
        return occluded_clip_stream(videos, rng, d.clip_len, skip=start_iter * batch)

    if stage == "generator":
        _train_generator(
            cfg, nets, lambda start: video_batches(clips(start), batch),
            out_dir=out_dir, run=run, resume=resume, progress=progress,
        )  # fmt: skip
        return out_dir / "model_final.pth"
    if stage == "shape":
        module: Any = ShapeStage(nets.shape_net)
        canvas = canvas_size(cfg)

        def make_loader(start: int) -> Any:
            return shape_batches(clips(start), batch, canvas)
    else:
        module = FlowStage(nets.flow_net)

        def make_loader(start: int) -> Any:
            return flow_batches(clips(start), batch)

    module.to(run.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    run.train(
        model=module,
        checkpoint_model=module.net,  # plain network weights
        optimizer=optimizer,
        make_loader=make_loader,
        max_iters=sc.iters,
        resume=resume,
        progress=progress,
        amp="none",  # the shape and flow stages train in fp32 (as the shipped model's card says)
        checkpoint_period=cfg.checkpoint_period,
        log_period=cfg.log_period,
        name=stage,
    )
    return out_dir / "model_final.pth"


def _davis_roots(d: InpaintingDataConfig) -> list[Path]:
    """``data.root`` (resolved) then ``data.extra_roots``, each checked to be a DAVIS root."""
    return [resolve_davis_root(d.root)] + [resolve_davis_root(r) for r in d.extra_roots if r]


def _train_leftover_generator(
    cfg: InpaintingTrainConfig,
    nets: VOINNets,
    *,
    out_dir: Path,
    seed: int,
    run: TrainingRun,
    resume: bool,
    progress: bool,
) -> None:
    """The leftover generator stage: build / reuse the leftover cache, then
    :func:`train_generator_gan` on its batches (crops of longer side ``generator.size``)."""
    from instseg.inference.inpainter import InpaintOptions

    d, lc = cfg.data, cfg.leftover
    crop = cfg.generator.size or d.size
    if crop % 4:
        raise ConfigError(f"generator.size must be a multiple of 4 for leftover crops, got {crop}")
    try:  # the inference options the cache is made with check the context
        opts = InpaintOptions(leftover_context=lc.context)
    except ValueError as e:
        raise ConfigError(f"leftover.context: {e}") from e
    # the inference margin (pixels of a 480p frame) at the cache's frame height
    margin = max(1, round(opts.generator_margin * lc.prop_height / 480))
    files = build_leftover_cache(
        _davis_roots(d),
        d.sequences,
        out_dir=Path(lc.cache_dir) if lc.cache_dir else Path(cfg.out_dir) / "leftover_cache",
        clips_per_sequence=lc.clips_per_sequence,
        clip_frames=lc.clip_frames,
        prop_height=lc.prop_height,
        crop_size=crop,
        margin=margin,
        seed=cfg.seed if lc.seed is None else lc.seed,
        synthetic_prob=lc.synthetic_prob,
        leftover_context=lc.context,
    )
    clips = load_leftover_cache(files)
    log.info("leftover generator: %d cached clips, crops of %d px", len(clips), crop)
    _train_generator(
        cfg,
        nets,
        lambda start: leftover_batches(
            clips, batch=d.batch, clip_len=d.clip_len, crop_size=crop, seed=seed, skip=start
        ),
        out_dir=out_dir,
        run=run,
        resume=resume,
        progress=progress,
    )


def _train_generator(
    cfg: InpaintingTrainConfig,
    nets: VOINNets,
    make_batches: Callable[[int], Any],
    *,
    out_dir: Path,
    run: TrainingRun,
    resume: bool,
    progress: bool,
) -> None:
    """:func:`train_generator_gan` with the config's generator-stage settings (both generator
    modes: whole holes and leftovers differ only in their batches)."""
    train_generator_gan(
        nets.generator,
        make_batches=make_batches,
        iters=cfg.generator.iters,
        lr=cfg.lr,
        out_dir=out_dir,
        device=run.device,
        small=cfg.variant != "paper",
        amp=cfg.amp,
        resume=resume,
        progress=progress,
        checkpoint_period=cfg.checkpoint_period,
        log_period=cfg.log_period,
        adv_start=cfg.adv_start,
        betas=(float(cfg.betas[0]), float(cfg.betas[1])),
    )


# {"stage": name, "size": frame height (leftover generator: crop side), "mode": generator mode
# (leftover only)}, beside model_final.pth
STAGE_RECORD = "stage.json"


def write_stage_record(
    out_dir: str | Path, stage: str, size: int, *, mode: str | None = None
) -> Path:
    """Record in ``out_dir`` the frame height (pixels) stage ``stage`` trains at (the leftover
    generator: its crops' longer side) and, for a generator, its ``mode``; packing copies them
    into the weights file (``model.stage_sizes``, ``model.generator_mode``), where inference
    reads the scale to feed the generator at."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"stage": stage, "size": int(size)}
    if mode is not None:
        rec["mode"] = mode
    atomic_write_json(out / STAGE_RECORD, rec)
    return out / STAGE_RECORD


def stage_mode(folder: Path) -> str:
    """The generator mode recorded in ``folder/generator/stage.json`` (``"hole"`` without)."""
    path = folder / "generator" / STAGE_RECORD
    return json.loads(path.read_text()).get("mode", "hole") if path.is_file() else "hole"


def stage_size(cfg: InpaintingTrainConfig, folder: Path, stage: str) -> int:
    """The frame height ``folder/<stage>`` was trained at: its :data:`STAGE_RECORD`, or (a
    stage trained before the record existed) the stage's size in ``cfg``."""
    path = folder / stage / STAGE_RECORD
    if path.is_file():
        rec = json.loads(path.read_text())
        if rec.get("stage") != stage:
            raise ValueError(f"{path}: records stage {rec.get('stage')!r}, expected {stage!r}")
        return int(rec["size"])
    return getattr(cfg, stage).size or cfg.data.size


def pack_voin(cfg: InpaintingTrainConfig, folder: Path) -> Path:
    """Load ``folder/{shape,flow,generator}/model_final.pth`` into the variant's networks and
    write ``folder/<weights_name>`` (one file, fp16 unless ``full_precision``), with the frame
    height each stage was trained at (:func:`stage_size`) as ``model.stage_sizes``."""
    from instseg.engine.checkpoint import load_checkpoint_file, load_model_weights
    from instseg.inference.inpainter import load_voin_weights, save_voin_weights

    cfg = effective_config(cfg)
    if (folder / "generator" / "model_final.pth").is_file():
        cfg.generator_mode = stage_mode(folder)  # what the stage folder was trained as
    nets = voin_nets(cfg)
    base = base_meta = None
    if cfg.pack_base:
        base, base_meta = load_voin_weights(cfg.pack_base)
    iters, sizes, sources = {}, {}, {}
    for stage, net in zip(STAGES, (nets.shape_net, nets.flow_net, nets.generator), strict=True):
        path = folder / stage / "model_final.pth"
        if not path.is_file() and base is not None and base_meta is not None:
            net.load_state_dict(getattr(base, STAGE_NETS[stage]).state_dict())
            iters[stage] = int(base_meta.training.get("iterations", {}).get(stage, 1))
            base_sizes = base_meta.model.get("stage_sizes") or base_meta.training.get(
                "stage_sizes", {}
            )
            sizes[stage] = int(base_sizes.get(stage) or stage_size(cfg, folder, stage))
            sources[stage] = str(cfg.pack_base)
            continue
        load_model_weights(net, path)  # strict: raises naming the file on any mismatch
        iters[stage] = int(load_checkpoint_file(path).get("iteration", 0))
        sizes[stage] = stage_size(cfg, folder, stage)
        sources[stage] = str(folder / stage)
    meta = {
        "iterations": iters,
        "seed": cfg.seed,
        "clip_len": cfg.data.clip_len,
        "batch": cfg.data.batch,
        "train_sequences": list(cfg.data.sequences),
        "held_out_sequences": list(VOIN_EVAL),
        "data": "DAVIS-2016 train sequences (data.root"
        + (" + data.extra_roots" if cfg.data.extra_roots else "")
        + ") with synthetic / cutout occluders",
        "stage_sources": sources,
    }
    if cfg.generator_mode == "leftover":
        meta["generator_data"] = "cached propagation leftovers (recipes/inpainting_leftovers.py)"
        meta["leftover"] = dataclasses.asdict(cfg.leftover)
        meta["adv_start"] = cfg.adv_start
    return save_voin_weights(
        nets,
        folder / cfg.weights_name,
        variant=cfg.variant,
        num_classes=1,
        canvas_size=canvas_size(cfg),
        trained=min(iters.values()) > 0,
        half=not cfg.full_precision,
        meta=meta,
        stage_sizes=sizes,
        defaults=dict(cfg.pack_defaults) or None,
    )
