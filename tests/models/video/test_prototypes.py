"""GMM-EM prototypes (Eqs. 5.2-5.4)."""

from __future__ import annotations

import math

import pytest
import torch

from instseg.models.video.prototypes import (
    gmm_em_prototypes,
    gmm_log_likelihood,
    gmm_logits,
    init_prototypes,
)

CENTRES = torch.tensor([[-3.0, 0.0], [3.0, 1.0]])


def _two_clusters(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = CENTRES[labels] + 0.3 * torch.randn(n, 2, generator=g)
    return x[None], labels


def test_log_likelihood_monotone_over_iterations() -> None:
    x, _ = _two_clusters()
    init = torch.tensor([[0.0, 0.5], [0.5, 0.0]])  # poor start: both near the middle
    lls = [
        gmm_em_prototypes(x, num_prototypes=2, iters=i, sigma=0.5, init=init)[3].item()
        for i in range(8)
    ]
    for a, b in zip(lls, lls[1:], strict=False):
        assert b >= a - 1e-5
    assert lls[-1] > lls[0] + 1.0


def test_recovers_cluster_centres_and_assignments() -> None:
    x, labels = _two_clusters()
    mu, vp, resp, _ = gmm_em_prototypes(x, num_prototypes=2, iters=10, sigma=0.5, init="grid")
    order = mu[0, :, 0].argsort()
    assert torch.allclose(mu[0, order], CENTRES, atol=0.1)
    assert torch.equal(vp, mu)  # values None -> value prototypes are the key prototypes
    hard = order.argsort()[resp[0].argmax(-1)]
    assert (hard == labels).float().mean() > 0.99
    assert torch.allclose(resp.sum(-1), torch.ones(1, 200))


def test_value_prototypes_are_assignment_weighted_means() -> None:
    x, labels = _two_clusters()
    values = torch.stack([labels.float(), torch.ones(200)], -1)[None]  # (1, N, 2)
    mu, vp, resp, _ = gmm_em_prototypes(x, values, num_prototypes=2, iters=10, sigma=0.5)
    expected = (resp[0].t() @ values[0]) / resp[0].sum(0)[:, None]
    assert torch.allclose(vp[0], expected, atol=1e-5)
    assert sorted(vp[0, :, 0].round().tolist()) == [0.0, 1.0]  # each prototype one label
    assert torch.allclose(vp[0, :, 1], torch.ones(2))


def test_log_likelihood_value_matches_formula() -> None:
    x, _ = _two_clusters(n=10)
    mu = CENTRES[None]
    sigma = 0.7
    dens = torch.stack(
        [torch.exp(-((x[0] - m) ** 2).sum(-1) / (2 * sigma**2)) for m in CENTRES], -1
    ) / (2 * math.pi * sigma**2)
    expected = torch.log(dens.mean(-1)).mean()
    assert torch.allclose(gmm_log_likelihood(x, mu, sigma=sigma)[0], expected, atol=1e-5)


def test_mask_excludes_points() -> None:
    x, labels = _two_clusters()
    far = torch.full((1, 20, 2), 100.0)  # outliers, masked out
    xs = torch.cat([x, far], 1)
    mask = torch.cat([torch.ones(200), torch.zeros(20)])[None].bool()
    mu, _, _, ll = gmm_em_prototypes(xs, num_prototypes=2, iters=10, sigma=0.5, mask=mask)
    assert mu.abs().max() < 5
    _, _, _, ll_ref = gmm_em_prototypes(x, num_prototypes=2, iters=10, sigma=0.5, init=mu[0])
    assert torch.allclose(ll, ll_ref, atol=1e-4)
    # an element with no valid point: finite, likelihood 0
    out = gmm_em_prototypes(xs, num_prototypes=2, iters=3, mask=torch.zeros(1, 220))
    assert all(torch.isfinite(t).all() for t in out) and out[3].item() == 0.0


def test_gradients_flow_to_keys_values_and_init() -> None:
    x, _ = _two_clusters(n=40)
    x = x.clone().requires_grad_(True)
    v = torch.randn(1, 40, 3, requires_grad=True)
    init = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    mu, vp, resp, ll = gmm_em_prototypes(x, v, num_prototypes=2, iters=3, sigma=1.0, init=init)
    (mu.sum() + vp.pow(2).sum() + ll.sum()).backward()
    for t in (x, v, init):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_bf16_input_is_stable_and_close_to_fp32() -> None:
    g = torch.Generator().manual_seed(1)
    keys = torch.nn.functional.normalize(torch.randn(2, 300, 16, generator=g), dim=-1) * 8
    vals = torch.randn(2, 300, 8, generator=g)
    ref = gmm_em_prototypes(keys, vals, num_prototypes=6, iters=3, sigma=0.05, init="grid")
    out = gmm_em_prototypes(
        keys.bfloat16(), vals.bfloat16(), num_prototypes=6, iters=3, sigma=0.05, init="grid"
    )
    assert out[0].dtype == torch.bfloat16 and out[2].dtype == torch.bfloat16
    assert out[3].dtype == torch.float32
    assert all(torch.isfinite(t.float()).all() for t in out)
    assert torch.allclose(out[1].float(), ref[1], atol=0.15)


def test_init_modes() -> None:
    x = torch.arange(20.0).view(1, 10, 2)
    grid = init_prototypes(x, 2, init="grid", weights=torch.ones(1, 10))
    assert torch.equal(grid[0], x[0, [2, 7]])
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(1, 10)
    w[0, 3] = 1
    rnd = init_prototypes(x, 3, init="random", weights=w, generator=g)
    assert torch.equal(rnd[0], x[0, [3, 3, 3]])  # only one valid point: repeated
    with pytest.raises(ValueError, match="init must be"):
        init_prototypes(x, 2, init=torch.zeros(3, 2), weights=torch.ones(1, 10))
    with pytest.raises(ValueError, match="keys must be"):
        gmm_em_prototypes(x[0], num_prototypes=2)


def test_logits_match_direct_distance() -> None:
    g = torch.Generator().manual_seed(2)
    x, mu = torch.randn(2, 7, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    direct = -((x[:, :, None] - mu[:, None]) ** 2).sum(-1) / (2 * 0.4**2)
    assert torch.allclose(gmm_logits(x, mu, sigma=0.4), direct, atol=1e-4)
