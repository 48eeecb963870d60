"""Trainer-facing loss wrappers of the two VOIN networks trained by the engine's
:class:`~instseg.engine.trainer.Trainer` (the generator trains adversarially instead, see
:mod:`instseg.recipes.inpainting_gan`). Each holds the bare network as ``net`` (what checkpoints
and the packed weights file store) and has ``loss(batch) -> {term: scalar}``."""

from __future__ import annotations

from torch import Tensor, nn

from instseg.models.inpainting.flow_completion import FlowCompletionNet, flow_completion_losses
from instseg.models.inpainting.shape_completion import AmodalShapeCompletion, shape_completion_loss

__all__ = ["FlowStage", "ShapeStage"]


class ShapeStage(nn.Module):
    """:class:`AmodalShapeCompletion` on the object canvas, BCE + dice.

    ``batch``: ``visible`` (B, T, 1, S, S) float canvases in [0, 1], ``amodal``
    (B, T, 1, S, S) float targets, ``labels`` (B,) long class ids."""

    def __init__(self, net: AmodalShapeCompletion) -> None:
        super().__init__()
        self.net = net

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.net(batch["visible"], batch["labels"])
        return shape_completion_loss(logits, batch["amodal"])


class FlowStage(nn.Module):
    """:class:`FlowCompletionNet` against the DIS flow of the clean frames, inside the amodal
    mask: L1 + gradient + Laplacian pyramid + ``warping_weight`` x warping (clean frames).

    ``batch``: ``frame_a`` / ``frame_b`` (B, 3, H, W) corrupted frames in [0, 1], ``clean_a`` /
    ``clean_b`` the clean ones, ``flow`` (B, 2, H, W) the initial completion, ``gt`` (B, 2, H, W)
    the target flow, ``visible`` / ``amodal`` (B, 1, H, W) float masks."""

    def __init__(self, net: FlowCompletionNet, *, warping_weight: float = 0.1) -> None:
        super().__init__()
        self.net, self.warping_weight = net, warping_weight

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b = batch
        pred = self.net(b["frame_a"], b["frame_b"], b["flow"], b["visible"], b["amodal"])
        terms = flow_completion_losses(
            pred, b["gt"], mask=b["amodal"], frame_a=b["clean_a"], frame_b=b["clean_b"]
        )
        terms["warping"] = self.warping_weight * terms["warping"]
        return terms
