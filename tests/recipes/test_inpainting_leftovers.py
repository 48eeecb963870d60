"""The leftover generator's data and stage (issue 16): the cache is made only of training
sequences (held-out ones are refused), from the non-learned pipeline's output cropped at the
generator's scale; batches carry only windows with leftovers; every loss term of the stage
trains the residual generator; packing records the mode and takes missing stages from a base
file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from instseg.config import load_config
from instseg.data.davis_splits import VOIN_EVAL
from instseg.models.inpainting.discriminators import (
    MultiClassDiscriminator,
    TPatchGAN,
    reconstruction_losses,
)
from instseg.models.inpainting.generator import compose
from instseg.models.inpainting.voin import voin_nets_small
from instseg.recipes.inpainting_config import InpaintingTrainConfig
from instseg.recipes.inpainting_gan import G_WEIGHTS, generator_losses
from instseg.recipes.inpainting_leftovers import (
    build_leftover_cache,
    crop_leftover_clip,
    leftover_batches,
    load_leftover_cache,
)

ROOT = Path(__file__).resolve().parents[2]


def _fake_davis(root: Path, names: list[str], t=6, h=48, w=64) -> Path:
    """A DAVIS-layout folder: smooth texture translating 2 px/frame, a moving box object."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        big = rng.integers(0, 255, (h // 8 + 2, w // 8 + 4, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(big).resize((w + 32, h + 16), Image.BICUBIC))
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for i in range(t):
            Image.fromarray(big[8 : 8 + h, 2 * i : 2 * i + w]).save(
                root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg", quality=95
            )
            m = np.zeros((h, w), np.uint8)
            m[12 + k : 36, 16 + i : 44 + i] = 255
            Image.fromarray(m).save(root / "Annotations" / "480p" / name / f"{i:05d}.png")
    return root


def test_cache_refuses_held_out_sequences(tmp_path):
    for name in VOIN_EVAL:
        with pytest.raises(ValueError, match="held out"):
            build_leftover_cache(
                tmp_path, ["flamingo", name], out_dir=tmp_path / "c", clips_per_sequence=1,
                clip_frames=4, prop_height=48, crop_size=32, margin=2, seed=0,
            )  # fmt: skip
    assert not (tmp_path / "c").exists()
    for name in ("voin_leftover.yaml", "voin_leftover_davis27.yaml"):
        cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / name)
        assert cfg.generator_mode == "leftover" and cfg.data.sequences
        assert not set(cfg.data.sequences) & set(VOIN_EVAL)
    assert len(set(cfg.data.sequences)) == 27 and cfg.data.extra_roots  # the 27-sequence one
    assert not set(InpaintingTrainConfig().data.sequences) & set(VOIN_EVAL)


def test_cache_of_training_sequences_and_its_batches(tmp_path):
    root = _fake_davis(tmp_path / "davis", ["seq-a", "seq-b"])
    kw = {"clips_per_sequence": 2, "clip_frames": 5, "prop_height": 48, "crop_size": 32}
    files = build_leftover_cache(root, ["seq-a", "seq-b"], out_dir=tmp_path / "c", margin=2,
                                 seed=0, **kw)  # fmt: skip
    rec = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert rec["settings"]["sequences"] == ["seq-a", "seq-b"] and len(files) == 4
    # the leftovers were Telea-filled from the object's pixels (inference's default), recorded
    # so that a cache of another fill is rebuilt
    assert rec["settings"]["leftover_context"] == "object"
    again = build_leftover_cache(root, ["seq-a", "seq-b"], out_dir=tmp_path / "c", margin=2,
                                 seed=0, **kw)  # fmt: skip
    assert again == files  # reused, not rebuilt
    clips = load_leftover_cache(files)
    for c in clips:
        assert max(c["frames"].shape[-2:]) == 32 and c["frames"].dtype == np.float16
        assert c["left"].shape == c["occluded"].shape == (5, 1, *c["frames"].shape[-2:])
        for k in ("left", "occluded", "amodal"):
            assert set(np.unique(c[k])) <= {0, 1}, k
    assert any(c["left"].any() for c in clips)
    b = next(leftover_batches(clips, batch=3, clip_len=3, crop_size=32, seed=0))
    assert b["frames"].shape == b["gt"].shape == (3, 3, 3, 32, 32)
    assert b["holes"].shape == b["occluded"].shape == b["amodal"].shape == (3, 3, 1, 32, 32)
    assert (b["holes"].flatten(1).amax(1) == 1).all()  # each window has leftover pixels


def test_crop_is_the_object_box_at_the_trained_scale():
    t, h, w = 2, 60, 80
    frames = np.zeros((t, h, w, 3), np.uint8)
    amodal = np.zeros((t, h, w), bool)
    amodal[:, 10:30, 20:60] = True  # 20 x 40 box, + margin 5 -> 30 x 50
    left = np.zeros_like(amodal)
    left[:, 15:20, 30:40] = True
    out = crop_leftover_clip(frames, frames, left=left, occluded=left, amodal=amodal,
                             crop_size=100, margin=5)  # fmt: skip
    assert out["frames"].shape == (2, 3, 60, 100) and out["left"].sum() > 0


def _grad_norm(term: Tensor, params: list[nn.Parameter]) -> float:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_every_leftover_generator_term_has_a_gradient():
    """On a random batch, each weighted term alone has a nonzero gradient w.r.t. the (still
    zero-initialised-last-layer) residual generator; the valid L1 is nonzero because the raw
    output is not composed."""
    torch.manual_seed(0)
    gen = voin_nets_small(num_classes=1, generator_mode="leftover").generator
    d_patch = TPatchGAN(base_channels=4, downsample=3)
    d_cls = MultiClassDiscriminator(num_classes=1, base_channels=4)
    g = torch.Generator().manual_seed(0)
    b, t, h, w = 2, 3, 32, 32
    holes = torch.zeros(b, t, 1, h, w)
    holes[..., 10:18, 10:20] = 1
    occluded = torch.zeros_like(holes)
    occluded[..., 8:22, 8:24] = 1
    amodal = torch.zeros_like(holes)
    amodal[..., 4:26, 6:26] = 1
    gt = torch.rand(b, t, 3, h, w, generator=g) * 2 - 1
    frames = gt + 0.1 * torch.randn(b, t, 3, h, w, generator=g)  # propagated + Telea
    batch = {"frames": frames, "gt": gt, "holes": holes, "occluded": occluded, "amodal": amodal}
    raw = gen(frames, holes, occluded, amodal)
    out = compose(raw, frames, holes)
    terms = generator_losses(d_patch, d_cls, batch, raw, out, torch.zeros(b, dtype=torch.long))
    assert set(terms) == set(G_WEIGHTS)
    params = list(gen.parameters())
    for name, term in terms.items():
        assert torch.isfinite(term) and _grad_norm(term, params) > 0, name
    assert reconstruction_losses(raw, gt, holes)["l1_valid"] > 0


def test_pack_records_leftover_mode_and_takes_missing_stages_from_the_base(tmp_path):
    from instseg.engine.checkpoint import Checkpointer
    from instseg.inference.inpainter import Inpainter, load_voin_weights, save_voin_weights
    from instseg.recipes.inpainting import pack_voin, voin_nets, write_stage_record

    torch.manual_seed(1)
    base_nets = voin_nets_small(num_classes=1)
    base = save_voin_weights(
        base_nets, tmp_path / "base.pt", variant="small", num_classes=1, canvas_size=32,
        trained=True, meta={"iterations": {"shape": 5, "flow": 6, "generator": 7}},
        stage_sizes={"shape": 128, "flow": 96, "generator": 64}, half=False,
    )  # fmt: skip
    cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / "voin_leftover.yaml")
    cfg.pack_base = str(base)
    folder = tmp_path / "run"
    gen = voin_nets(cfg).generator
    Checkpointer(gen, save_dir=folder / "generator").save("model_final", iteration=3)
    write_stage_record(folder / "generator", "generator", 48, mode="leftover")
    cfg.generator_mode = "hole"  # the stage record decides
    cfg.pack_defaults = {"use_flow_net": False, "use_generator": True}
    nets, meta = load_voin_weights(pack_voin(cfg, folder))
    assert meta.model["generator_mode"] == "leftover" and nets.generator.residual
    assert meta.model["defaults"] == {"use_flow_net": False, "use_generator": True}
    assert meta.model["stage_sizes"] == {"shape": 128, "flow": 96, "generator": 48}
    assert meta.training["iterations"] == {"shape": 5, "flow": 6, "generator": 3}
    for a, b in ((nets.shape_net, base_nets.shape_net), (nets.flow_net, base_nets.flow_net)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k].to(torch.float16).to(sa[k].dtype)) for k in sa)
    inp = Inpainter.from_weights(folder / cfg.weights_name, progress=False)
    assert inp.model.generator.residual and inp.generator_max_side == 48
    assert inp.generates and not inp.refines_flow  # the packed defaults


@pytest.mark.parametrize(("cache_seed", "expected"), [(None, 5), (0, 0)])
def test_cache_seed_is_the_runs_or_the_configured_one(tmp_path, monkeypatch, cache_seed, expected):
    """``leftover.seed`` fixes the cache's draw, so training seeds can share one cache."""
    import instseg.recipes.inpainting as recipe

    seen = {}

    def fake_cache(*args, **kw):
        seen.update(kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(recipe, "build_leftover_cache", fake_cache)
    monkeypatch.setattr(recipe, "resolve_davis_root", lambda root: tmp_path)
    cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / "voin_leftover.yaml")
    cfg.seed, cfg.leftover.seed, cfg.out_dir = 5, cache_seed, str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="stop"):
        recipe.train_voin_stage(cfg, "generator", out_dir=tmp_path / "g", seed=7, progress=False)
    assert seen["seed"] == expected


def test_leftover_generator_overfits_one_batch():
    """The residual generator can learn (a tiny overfit: the hole L1 on one fixed batch falls
    well below the zero-residual start, i.e. below propagation + Telea's error); on the real
    cache the same check goes 0.254 -> 0.133 in 300 steps, so its held-out plateau at Telea's
    level is not an optimisation bug."""
    torch.manual_seed(0)
    gen = voin_nets_small(num_classes=1, generator_mode="leftover").generator
    b, t, h, w = 2, 3, 32, 32
    holes = torch.zeros(b, t, 1, h, w)
    holes[..., 10:20, 10:22] = 1
    amodal = torch.zeros_like(holes)
    amodal[..., 6:26, 6:26] = 1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    gt = torch.stack([xx, yy, xx * yy]).expand(b, t, 3, h, w).contiguous()
    frames = gt * (1 - holes) + holes * gt.mean()  # a flat fill where the truth is a ramp
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        raw = gen(frames, holes, holes, amodal)
        loss = reconstruction_losses(raw, gt, holes)["l1_hole"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.1 and float(loss.detach()) < 0.6 * first, (first, float(loss.detach()))
