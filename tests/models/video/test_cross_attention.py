"""Frame-level prototypical cross-attention (Eqs. 5.5-5.7) and the baselines."""

from __future__ import annotations

import pytest
import torch

from instseg.models.video.cross_attention import (
    DenseNonLocalAttention,
    MultiHeadSelfAttention,
    PrototypeMemory,
    PrototypicalCrossAttention,
    build_multilevel_pcam,
    prototypical_read,
    temporal_aggregate,
)


def _feats(seed: int, b: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "p3": torch.randn(b, 16, 12, 16, generator=g),
        "p4": torch.randn(b, 16, 6, 8, generator=g),
        "p5": torch.randn(b, 16, 3, 4, generator=g),
        "p6": torch.randn(b, 16, 2, 2, generator=g),
    }


def test_shapes_identity_at_init_and_bounded_memory() -> None:
    torch.manual_seed(0)
    pcam = build_multilevel_pcam(
        levels=("p3", "p4", "p5"), in_channels=16, num_prototypes=5, key_channels=8
    )
    memory = PrototypeMemory(capacity=3)
    sizes = []
    for t in range(6):
        feats = _feats(t)
        out, memory = pcam(feats, memory)
        assert list(out) == list(feats)  # same levels, same order
        for k in feats:
            assert out[k].shape == feats[k].shape
            assert torch.allclose(out[k], feats[k])  # zero-initialised fusion: identity
        assert out["p6"] is feats["p6"]
        sizes.append(memory.num_prototypes())
        stacked = memory.stacked("p3")
        assert stacked is not None
        assert stacked[0].shape == (2, min(t + 1, 3), 5, 8)
        assert stacked[1].shape == (2, min(t + 1, 3), 5, 16)
    assert sizes == [15, 30, 45, 45, 45, 45]  # 3 levels x K=5, at most 3 frames
    assert memory.stacked("p7") is None


def test_memory_is_fifo_and_immutable() -> None:
    m0 = PrototypeMemory(capacity=2)
    frames = [(torch.full((1, 2, 3), float(i)), torch.full((1, 2, 4), float(i))) for i in range(3)]
    m = m0
    for f in frames:
        m = m.push({"p3": f})
    assert m0.num_frames("p3") == 0
    assert [float(k[0, 0, 0]) for k in m.keys["p3"]] == [1.0, 2.0]
    with pytest.raises(ValueError, match="capacity"):
        PrototypeMemory(capacity=0)


def test_gradients_reach_key_value_convs_through_memory() -> None:
    torch.manual_seed(0)
    m = PrototypicalCrossAttention(in_channels=8, key_channels=4, num_prototypes=3, zero_init=False)
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(1, 8, 6, 6, generator=g)
    cur = torch.randn(1, 8, 6, 6, generator=g, requires_grad=True)
    _, protos = m(ref)
    out, _ = m(cur, (protos[0][:, None], protos[1][:, None]))
    assert out.shape == cur.shape
    out.pow(2).mean().backward()
    for p in (m.key.weight, m.value.weight, m.fuse.weight, cur):
        g = p.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_read_attends_to_nearest_prototype() -> None:
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, N=2, 2)
    pk = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (1, T=1, K=2, 2)
    pv = torch.tensor([[[[10.0], [-10.0]]]])
    y = prototypical_read(keys, pk, pv, sigma=0.1)
    assert torch.allclose(y[0, 0, :, 0], torch.tensor([10.0, -10.0]), atol=1e-3)


def test_temporal_aggregate_weights_similar_frames() -> None:
    cur = torch.tensor([[[1.0, 0.0]]])  # (1, N=1, 2)
    frames = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]], [[3.0, 3.0]]]])  # (1, T=3, 1, 2)
    out = temporal_aggregate(cur, frames, temperature=0.5)
    # cosine with the current read: 1, 0, 1/sqrt(2), and 1 for the current read itself
    w = torch.softmax(torch.tensor([1.0, 0.0, 0.5**0.5, 1.0]) / 0.5, 0)
    expected = w[0] * frames[0, 0, 0] + w[1] * frames[0, 1, 0] + w[2] * frames[0, 2, 0]
    expected = expected + w[3] * cur[0, 0]
    assert torch.allclose(out[0, 0], expected, atol=1e-5)
    # a memory read identical in direction to the current one weighs as much as the current
    # one: self-similarity alone does not switch the memory off
    same = temporal_aggregate(cur, torch.tensor([[[[7.0, 0.0]]]]), temperature=0.1)
    assert torch.allclose(same[0, 0], torch.tensor([4.0, 0.0]), atol=1e-5)


def test_empty_memory_reads_the_current_frames_prototypes() -> None:
    torch.manual_seed(1)
    m = PrototypicalCrossAttention(in_channels=8, key_channels=4, num_prototypes=3, zero_init=False)
    x = torch.randn(1, 8, 5, 5)
    out, (kp, vp) = m(x)
    k, _ = m.encode(x)
    y = prototypical_read(k, kp[:, None], vp[:, None], sigma=m.kernel_sigma(k))[:, 0]  # (1, 25, 8)
    y = y.transpose(1, 2).reshape(1, 8, 5, 5)
    assert torch.allclose(out, x + m.fuse(torch.cat([x, y], 1)), atol=1e-5)
    assert kp.shape == (1, 3, 4) and vp.shape == (1, 3, 8)
    assert torch.allclose(kp.norm(dim=-1), torch.ones(1, 3), atol=0.3)  # means of unit keys


def test_zero_prototypes_ignore_the_memory() -> None:
    torch.manual_seed(2)
    m = PrototypicalCrossAttention(in_channels=8, key_channels=4, num_prototypes=3, zero_init=False)
    x = torch.randn(1, 8, 5, 5)
    _, mem = m(torch.randn(1, 8, 5, 5))
    memory = (mem[0][:, None], mem[1][:, None])  # one frame of memory
    with_memory, _ = m(x, memory)
    alone, _ = m(x)
    assert not torch.allclose(alone, with_memory)  # with K > 0 the memory is read
    m.num_prototypes = 0
    out, (kp, vp) = m(x, memory)
    assert torch.allclose(out, x + m.fuse(torch.cat([x, m.value(x)], 1)), atol=1e-5)
    assert kp.shape == (1, 0, 4) and vp.shape == (1, 0, 8)


def test_baselines_shapes_and_backward() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 16, 4, 5)
    mem = torch.randn(1, 3, 16, 4, 5)
    nl = DenseNonLocalAttention(in_channels=16, key_channels=8)
    out = nl(x, mem)
    assert out.shape == x.shape
    sa = MultiHeadSelfAttention(in_channels=16, num_heads=4)
    tube = torch.randn(1, 3, 16, 4, 5, requires_grad=True)
    y = sa(tube)
    assert y.shape == tube.shape
    (out.sum() + y.sum()).backward()
    assert tube.grad is not None and nl.key.weight.grad is not None


def test_bf16_autocast_finite_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    pcam = build_multilevel_pcam(levels=("p3",), in_channels=16, num_prototypes=5, key_channels=8)
    torch.nn.init.normal_(pcam.levels["p3"].fuse.weight, std=0.1)
    feats = [{"p3": f["p3"]} for f in (_feats(0), _feats(1))]
    ref_mem = pcam(feats[0], PrototypeMemory(capacity=2))[1]
    ref = pcam(feats[1], ref_mem)[0]["p3"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mem = pcam(feats[0], PrototypeMemory(capacity=2))[1]
        out = pcam(feats[1], mem)[0]["p3"]
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out.float()).all()
    assert torch.allclose(out.float(), ref, atol=0.1)
    grads = [p.grad for p in pcam.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- selection (issue 15, item 3)


def _tight_clusters(n_per: int = 9, spread: float = 0.004, sep: float = 0.04) -> torch.Tensor:
    """(1, 4 * n_per, 8) unit keys in 4 tight clusters ~``sep`` apart (like the shipped
    model's P5 keys: pairwise distances of a few hundredths)."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.ones(8), dim=0)
    dirs = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    centres = torch.nn.functional.normalize(base + sep * dirs, dim=1)
    pts = centres.repeat_interleave(n_per, 0) + spread * torch.randn(4 * n_per, 8, generator=g)
    return torch.nn.functional.normalize(pts, dim=1)[None]


def test_prototypes_do_not_collapse_on_tight_keys() -> None:
    """With a fixed sigma of 0.3 (temperature 0.18) keys a few hundredths apart get uniform
    responsibilities and every prototype becomes the global mean; the kernel scale taken from
    the keys keeps one prototype per cluster."""
    from instseg.models.video.prototypes import gmm_em_prototypes, responsibility_entropy

    keys = _tight_clusters()
    m = PrototypicalCrossAttention(in_channels=8, key_channels=8, num_prototypes=4)
    kp, _ = m.prototypes(keys, keys)
    d = torch.cdist(kp[0], kp[0])
    assert d[~torch.eye(4, dtype=torch.bool)].min() > 0.01  # four distinct prototypes
    sigma = m.kernel_sigma(keys)
    assert sigma.shape == (1,) and float(sigma) < 0.05
    _, _, resp, _ = gmm_em_prototypes(keys, num_prototypes=4, sigma=sigma, init="grid")
    assert float(responsibility_entropy(resp)) < 0.3  # each key picks its cluster
    _, _, flat, _ = gmm_em_prototypes(keys, num_prototypes=4, sigma=0.3, init="grid")
    assert float(responsibility_entropy(flat)) > 0.99  # the old fixed sigma: uniform


def test_eq57_weights_select_the_frames_that_explain_the_pixel() -> None:
    """Eq. 5.7 weights are the posterior over frames of the pixel's key under each frame's
    prototype mixture (Eq. 5.2): a memory frame whose prototypes lie elsewhere gets ~0 weight
    even when its value read points the same way as the current one (the cosine-of-values
    weights gave every frame ~1/(T+1))."""
    m = PrototypicalCrossAttention(in_channels=2, key_channels=2, num_prototypes=1)
    k = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.02], [1.0, -0.02]]]), dim=-1)
    own = (torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]]))
    mem_k = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # frame 1 like the pixel, frame 2 not
    mem_v = torch.tensor([[[[3.0, 0.0]], [[2.0, 0.2]]]])  # reads with cosine ~1 to the current
    y = m.read(k, *own, (mem_k, mem_v))
    assert torch.allclose(y, torch.tensor([2.0, 0.0]).expand(1, 2, 2), atol=1e-3)


def test_diagnostics_measure_selectivity() -> None:
    """Liveness of a PCAM (issue 15, D3): on keys in four tight clusters the responsibilities
    are selective (low entropy); memory frames identical to the current one get equal Eq. 5.7
    weights (normalised entropy 1, current weight 1/3 with two of them); a memory frame whose
    prototypes lie far from the current keys gets ~0 weight."""
    m = PrototypicalCrossAttention(in_channels=8, key_channels=8, num_prototypes=4)
    with torch.no_grad():  # keys = the input features
        m.key.weight.copy_(torch.eye(8)[:, :, None, None])
        m.key.bias.zero_()
    x = _tight_clusters().transpose(1, 2).reshape(1, 8, 6, 6)
    _, protos = m(x)
    same = tuple(torch.stack([p, p], 1) for p in protos)  # (1, 2, K, C)
    d = m.diagnostics(x, same)
    assert d["resp_entropy"] < 0.3
    assert d["frame_weight_entropy"] == pytest.approx(1.0, abs=1e-4)
    assert d["current_weight"] == pytest.approx(1 / 3, abs=1e-4)
    far = (-protos[0][:, None], protos[1][:, None])  # keys on the other side of the sphere
    d = m.diagnostics(x, far)
    assert d["current_weight"] > 0.99 and d["frame_weight_entropy"] < 0.05
    assert set(m.diagnostics(x)) == {"resp_entropy"}
