"""The adversarial VOIN stage: :class:`OcclusionAwareGenerator` against T-PatchGAN and the
multi-class STAM discriminator (two optimizers, D and G steps alternating by hand, so not the
engine's single-optimizer :class:`Trainer`).

Per step: D loss = hinge(T-PatchGAN) + multi-class(STAM), both on (frames, mask) stacks
(:func:`discriminator_losses`); G loss = L1 hole + L1 valid on the raw generator output (weight 1
each) + 0.01 x (hinge G + multi-class G) on the composed output, STTN's weights
(:func:`generator_losses`; before issue 16 the valid L1 was taken on the composed output, which
equals the ground truth there: it was identically 0). The hole is the whole occluded region
(at inference the generator sees the propagation leftovers, a subset), or, for the leftover
generator, the leftovers themselves (batches with ``occluded``, the occlusion mask the
generator's input and gates also get). Before ``adv_start`` only the L1 terms train the
generator and the discriminators are not stepped. The discriminators run
under ``amp`` autocast (bf16 is 7-17x faster for these 3D convs on bf16-native CPUs);
everything else in fp32.

Checkpoints (``<out_dir>/model_<iter>.pth`` every ``checkpoint_period`` iterations and
``model_final.pth``) are engine :class:`Checkpointer` files of the generator and its optimizer
(what packing reads) plus the discriminators and their optimizer under ``discriminators`` /
``d_optimizer``, so ``resume`` continues a run exactly (the batch stream is rebuilt by
``make_batches(start_iter)``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from instseg.engine.checkpoint import Checkpointer, load_checkpoint_file
from instseg.models.inpainting.discriminators import (
    MultiClassDiscriminator,
    TPatchGAN,
    hinge_d_loss,
    hinge_g_loss,
    multiclass_d_loss,
    multiclass_g_loss,
    reconstruction_losses,
)
from instseg.models.inpainting.generator import OcclusionAwareGenerator, compose
from instseg.utils.precision import autocast

__all__ = ["G_WEIGHTS", "discriminator_losses", "generator_losses", "train_generator_gan"]

# STTN's generator weights: L1 on the raw output in the hole and on the valid pixels, 1 each;
# the adversarial terms (T-PatchGAN hinge, multi-class STAM) 0.01 each
G_WEIGHTS = {"l1_hole": 1.0, "l1_valid": 1.0, "adv_patch": 0.01, "adv_class": 0.01}


def discriminator_losses(
    d_patch: TPatchGAN,
    d_cls: MultiClassDiscriminator,
    batch: dict[str, Tensor],
    fake: Tensor,
    labels: Tensor,
    amp_ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Tensor]:
    """``patch``: hinge loss of T-PatchGAN on (frames, hole mask) stacks; ``class``: the
    multi-class STAM discriminator's loss on (frames, amodal mask) stacks; real = ``gt``,
    fake = ``fake`` (the composed output, detached by the caller). fp32 scalars."""
    b = batch
    with amp_ctx():
        patch = hinge_d_loss(
            d_patch(torch.cat([b["gt"], b["holes"]], dim=2)),
            d_patch(torch.cat([fake, b["holes"]], dim=2)),
        )
        cls = multiclass_d_loss(
            d_cls(torch.cat([b["gt"], b["amodal"]], dim=2)),
            d_cls(torch.cat([fake, b["amodal"]], dim=2)),
            labels,
        )
    return {"patch": patch.float(), "class": cls.float()}


def generator_losses(
    d_patch: TPatchGAN,
    d_cls: MultiClassDiscriminator,
    batch: dict[str, Tensor],
    raw: Tensor,
    out: Tensor,
    labels: Tensor,
    amp_ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Tensor]:
    """The generator's terms, weighted by :data:`G_WEIGHTS`: ``l1_hole`` / ``l1_valid`` on
    the **raw** output ``raw`` (the composed ``out`` equals ``gt`` outside the hole, so a valid
    term on it is identically 0), ``adv_patch`` / ``adv_class`` on the composed ``out``."""
    b = batch
    rec = reconstruction_losses(raw, b["gt"], b["holes"])
    with amp_ctx():
        patch = hinge_g_loss(d_patch(torch.cat([out, b["holes"]], dim=2)))
        cls = multiclass_g_loss(d_cls(torch.cat([out, b["amodal"]], dim=2)), labels)
    terms = {**rec, "adv_patch": patch.float(), "adv_class": cls.float()}
    return {k: G_WEIGHTS[k] * v for k, v in terms.items()}


log = logging.getLogger(__name__)


def train_generator_gan(
    generator: OcclusionAwareGenerator,
    *,
    make_batches: Callable[[int], Iterator[dict[str, Tensor]]],
    iters: int,
    lr: float,
    out_dir: str | Path,
    device: torch.device,
    small: bool,
    amp: str = "auto",
    resume: bool = False,
    progress: bool = True,
    checkpoint_period: int = 0,
    log_period: int = 10,
    adv_start: int = 0,
    betas: tuple[float, float] = (0.0, 0.99),
) -> int:
    """Train ``generator`` (moved to ``device``) for ``iters`` iterations on
    ``make_batches(start_iter)`` (dicts of ``frames`` / ``gt`` (B, T, 3, H, W) in [-1, 1],
    ``holes`` / ``amodal`` (B, T, 1, H, W), optionally ``occluded`` (B, T, 1, H, W), else
    ``holes``); ``small``: 8-channel discriminators (T-PatchGAN with 3 downsamplings) instead of
    64 (6); ``adv_start``: iterations before it train on the L1 terms only; ``betas``: Adam's,
    both optimizers (the GAN default (0, 0.99)). Returns the iteration it started at."""
    from tqdm import tqdm

    dev = torch.device(device)
    c = 8 if small else 64
    gen = generator.to(dev)
    d_patch = TPatchGAN(base_channels=c, downsample=3 if small else 6).to(dev)
    d_cls = MultiClassDiscriminator(num_classes=1, base_channels=c).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam([*d_patch.parameters(), *d_cls.parameters()], lr=lr, betas=betas)
    ckpt = Checkpointer(gen, optimizer=opt_g, save_dir=out_dir)
    start = 0
    if resume and ckpt.has_checkpoint():
        path = ckpt.get_checkpoint_file()
        start = ckpt.load(path)  # generator, its optimizer, RNG states
        data = load_checkpoint_file(path)
        if "discriminators" not in data or "d_optimizer" not in data:
            raise ValueError(f"{path}: no discriminator state to resume the generator stage from")
        d_patch.load_state_dict(data["discriminators"]["patch"])
        d_cls.load_state_dict(data["discriminators"]["class"])
        opt_d.load_state_dict(data["d_optimizer"])
        log.info("generator: resumed at iteration %d from %s", start, path)

    def save(name: str, it: int) -> None:
        ckpt.save(
            name,
            iteration=it,
            discriminators={"patch": d_patch.state_dict(), "class": d_cls.state_dict()},
            d_optimizer=opt_d.state_dict(),
        )

    def amp_ctx() -> contextlib.AbstractContextManager:
        return autocast(amp, dev)

    batches = make_batches(start)
    bar = tqdm(total=iters, initial=start, desc="generator", disable=not progress)
    for it in range(start, iters):
        b = {k: v.to(dev) for k, v in next(batches).items()}
        labels = torch.zeros(len(b["frames"]), dtype=torch.long, device=dev)
        raw = gen(b["frames"], b["holes"], b.get("occluded", b["holes"]), b["amodal"])
        out = compose(raw, b["frames"], b["holes"])
        if it >= adv_start:
            d_terms = discriminator_losses(d_patch, d_cls, b, out.detach(), labels, amp_ctx)
            d_loss = sum(d_terms.values())
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_terms = generator_losses(d_patch, d_cls, b, raw, out, labels, amp_ctx)
        else:
            d_loss = torch.zeros(())
            g_terms = {
                k: G_WEIGHTS[k] * v
                for k, v in reconstruction_losses(raw, b["gt"], b["holes"]).items()
            }
        g_loss = sum(g_terms.values())
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if it % log_period == 0:
            log.info(
                "generator it %d: d %.3f %s",
                it,
                d_loss.item(),
                " ".join(f"{k} {v.item():.4f}" for k, v in g_terms.items()),
            )
        bar.update(1)
        done = it + 1
        if checkpoint_period > 0 and done % checkpoint_period == 0 and done < iters:
            save(f"model_{done:07d}", done)
    bar.close()
    save("model_final", iters)
    return start
