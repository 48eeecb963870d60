"""GMM-EM prototypes (survey ch. 5.2.2, Eqs. 5.2-5.4).

A set of N key vectors is clustered by a Gaussian mixture with K components of constant,
isotropic variance ``sigma^2`` and uniform priors ``1/K`` (Eq. 5.2). EM alternates

    E-step (Eq. 5.3):  r_nk = softmax_k(-||k_n - mu_k||^2 / (2 sigma^2))
    M-step:            mu_k = sum_n w_n r_nk k_n / sum_n w_n r_nk

(``w_n`` = optional per-point weight/mask). After the last M-step a final E-step gives the
assignments that are returned; value prototypes are the assignment-weighted means of the
values (Eq. 5.4, normalised by ``sum_n w_n r_nk`` so a prototype is a mean, not a sum).

``sigma`` is a number or a (B,) tensor (one kernel scale per batch element).
:func:`data_sigma` picks it from the keys (``sigma^2 = 0.1 * lambda_max`` of their covariance),
so the E-step separates clusters whatever the spread of the keys. A fixed sigma does not: when
all keys lie within a few hundredths of each other (a learnt key map with a large common
component), ``2 sigma^2 = 0.18`` makes every responsibility ~1/K and EM collapses all
prototypes onto the global mean (:func:`responsibility_entropy` ~1).

Everything runs in float32 whatever the input dtype (bf16 distances underflow the softmax);
the outputs are cast back to the input dtype. The whole procedure is differentiable: gradients
reach the keys, the values and a given initialisation through every EM iteration.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "gmm_em_prototypes",
    "gmm_log_likelihood",
    "gmm_logits",
    "init_prototypes",
    "label_prototypes",
    "label_read",
    "data_sigma",
    "responsibility_entropy",
]

Sigma = float | Tensor

Init = Literal["random", "grid"]
_EMPTY_EPS = 1e-6  # keeps an emptied component at its previous mean instead of NaN


def gmm_em_prototypes(
    keys: Tensor,
    values: Tensor | None = None,
    *,
    num_prototypes: int,
    iters: int = 3,
    sigma: Sigma = 1.0,
    init: Init | Tensor = "random",
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fit a K-component GMM to each batch element's keys with ``iters`` EM iterations.

    Args:
        keys: (B, N, C) points to cluster (any float dtype).
        values: (B, N, Cv) or None (then the value prototypes are the key prototypes).
        num_prototypes: K.
        iters: EM iterations (0 returns the initialisation with its assignments).
        sigma: the constant standard deviation, a number or (B,) (see :func:`data_sigma`); the
            softmax temperature is ``2 sigma^2``.
        init: ``"random"`` (K distinct valid points, drawn with ``generator``), ``"grid"``
            (K evenly spaced valid points in index order: a coarse raster for flattened
            feature maps; deterministic) or a tensor (B, K, C) / (K, C) of initial means
            (e.g. the previous frame's prototypes, which keeps component j tracking the same
            part over time).
        mask: (B, N) bool or float weights in [0, 1]; points with weight 0 do not move the
            means and do not count in the likelihood. An element with no valid point keeps
            its initialisation (drawn from all points) and gets log-likelihood 0.
        generator: for ``init="random"``.

    Returns:
        key_protos (B, K, C), value_protos (B, K, Cv), assignments (B, N, K) (posteriors
        ``p(z=k | key_n)`` under the returned means; rows sum to 1, also for masked points) and
        log_likelihood (B,) float32: mean over valid points of ``log p(key_n)`` (Eq. 5.2).
    """
    if keys.ndim != 3:
        raise ValueError(f"keys must be (B, N, C), got {tuple(keys.shape)}")
    b, n, _ = keys.shape
    if values is not None and values.shape[:2] != (b, n):
        raise ValueError(f"values must be (B, N, Cv) = ({b}, {n}, .), got {tuple(values.shape)}")
    if num_prototypes < 1 or iters < 0 or bool((torch.as_tensor(sigma) <= 0).any()):
        raise ValueError(
            f"need num_prototypes >= 1, iters >= 0, sigma > 0; got "
            f"{num_prototypes}, {iters}, {sigma}"
        )
    out_dtype = keys.dtype
    x = keys.float()
    w = _weights(mask, b, n, x.device)
    mu = init_prototypes(x, num_prototypes, init=init, weights=w, generator=generator)
    for _ in range(iters):
        resp = gmm_logits(x, mu, sigma=sigma).softmax(dim=-1)
        mu = _weighted_means(x, resp, w, prev=mu)
    logits = gmm_logits(x, mu, sigma=sigma)
    resp = logits.softmax(dim=-1)
    if values is None:
        v_protos = mu
    else:
        v_protos = _weighted_means(values.float(), resp, w, prev=None)
    ll = _mean_log_likelihood(logits, w, dim=x.shape[-1], sigma=sigma)
    return mu.to(out_dtype), v_protos.to(out_dtype), resp.to(out_dtype), ll


def gmm_logits(x: Tensor, mu: Tensor, *, sigma: Sigma) -> Tensor:
    """(B, N, C), (B, K, C) -> (B, N, K) ``-||x_n - mu_k||^2 / (2 sigma^2)`` in float32
    (``sigma``: a number or (B,)).

    Expanded as ``2 x.mu - |mu|^2 - |x|^2`` (one matmul, no (B, N, K, C) tensor); clamped so
    the distance is never negative from rounding."""
    x, mu = x.float(), mu.float()
    x2 = x.pow(2).sum(-1, keepdim=True)
    mu2 = mu.pow(2).sum(-1).unsqueeze(-2)
    d2 = (x2 + mu2 - 2.0 * torch.matmul(x, mu.transpose(-1, -2))).clamp_min(0.0)
    return d2 * (-0.5 / _sigma2(sigma, d2))


def gmm_log_likelihood(
    keys: Tensor, means: Tensor, *, sigma: Sigma, mask: Tensor | None = None
) -> Tensor:
    """Mean log-likelihood (B,) of keys (B, N, C) under the uniform-prior GMM of Eq. 5.2."""
    w = _weights(mask, keys.shape[0], keys.shape[1], keys.device)
    return _mean_log_likelihood(gmm_logits(keys, means, sigma=sigma), w, keys.shape[-1], sigma)


def label_prototypes(
    keys: Tensor,
    weights: Tensor,
    labels: Tensor,
    *,
    num_prototypes: int,
    iters: int,
    sigma: float,
    init: Init | Tensor = "grid",
    empty_value: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Key prototypes of the ``weights``-weighted keys (B, N, C) and, as their values (Eq. 5.4),
    the responsibility-weighted mean of a per-point soft label ``labels`` (B, N) (e.g. a mask
    coverage, so prototypes of boundary points carry fractional labels).

    -> key prototypes (B, K, C), label values (B, K) float32. A component that received no
    weight gets ``empty_value`` (None: 0, from the clamped division)."""
    mu, _, resp, _ = gmm_em_prototypes(
        keys, num_prototypes=num_prototypes, mask=weights, iters=iters, sigma=sigma, init=init
    )
    r = resp.float() * weights.float().unsqueeze(-1)  # (B, N, K)
    den = r.sum(1)
    val = (r * labels.float().unsqueeze(-1)).sum(1) / den.clamp_min(1e-6)
    if empty_value is not None:
        val = torch.where(den > 1e-3, val, torch.full_like(val, empty_value))
    return mu, val


def label_read(queries: Tensor, protos: Tensor, values: Tensor, *, sigma: float) -> Tensor:
    """Eq. 5.5 with label values: queries (B, N, C), prototypes (B, K, C) (re-normalised to unit
    length, so ``2 sigma^2`` acts as a cosine temperature), values (B, K) -> (B, N) in [0, 1],
    ``sum_k softmax_k(-|q - mu_k|^2 / 2 sigma^2) v_k``."""
    mu = torch.nn.functional.normalize(protos, dim=-1)
    attn = gmm_logits(queries, mu, sigma=sigma).softmax(-1)
    return torch.matmul(attn, values.float().unsqueeze(-1))[..., 0].clamp(0, 1)


def init_prototypes(
    x: Tensor,
    k: int,
    *,
    init: Init | Tensor,
    weights: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Initial means (B, K, C) float32 from points x (B, N, C) with weights (B, N)."""
    b, n, c = x.shape
    if isinstance(init, Tensor):
        mu = init.float().to(x.device)
        mu = mu.expand(b, -1, -1) if mu.ndim == 2 else mu
        if mu.shape != (b, k, c):
            raise ValueError(f"init must be ({k}, {c}) or ({b}, {k}, {c}), got {tuple(init.shape)}")
        return mu
    valid = weights > 0
    valid = torch.where(valid.any(1, keepdim=True), valid, torch.ones_like(valid))
    if init == "random":
        noise = torch.rand(b, n, generator=generator, device="cpu").to(x.device)
        score = torch.where(valid, noise, noise - 2.0)  # valid points first, random order
        idx = score.argsort(dim=1, descending=True)
        nvalid = valid.sum(1, keepdim=True)
        pos = torch.arange(k, device=x.device).unsqueeze(0) % nvalid  # repeat if K > #valid
    elif init == "grid":
        # valid points first, in index order (stable sort), then K evenly spaced among them
        idx = (~valid).to(torch.int8).argsort(dim=1, stable=True)
        nvalid = valid.sum(1, keepdim=True).float()
        steps = (torch.arange(k, device=x.device).float() + 0.5) / k
        pos = (steps.unsqueeze(0) * nvalid).long().clamp_max(n - 1)
    else:
        raise ValueError(f"init must be 'random', 'grid' or a tensor, got {init!r}")
    chosen = idx.gather(1, pos)
    return x.gather(1, chosen.unsqueeze(-1).expand(b, k, c))


# ---------------------------------------------------------------- helpers


def _weights(mask: Tensor | None, b: int, n: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(b, n, device=device)
    if mask.shape != (b, n):
        raise ValueError(f"mask must be (B, N) = ({b}, {n}), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.float32)


def _weighted_means(x: Tensor, resp: Tensor, w: Tensor, *, prev: Tensor | None) -> Tensor:
    """M-step: (B, N, D), (B, N, K), (B, N) -> (B, K, D). An empty component keeps ``prev``
    (or becomes 0 when ``prev`` is None)."""
    r = resp * w.unsqueeze(-1)
    num = torch.matmul(r.transpose(1, 2), x)
    den = r.sum(1).unsqueeze(-1)
    if prev is None:
        return num / den.clamp_min(_EMPTY_EPS)
    return (num + _EMPTY_EPS * prev) / (den + _EMPTY_EPS)


def _sigma2(sigma: Sigma, like: Tensor) -> Tensor | float:
    """sigma^2 as a number, or (B,) -> (B, 1, 1) float32 on ``like``'s device."""
    if not isinstance(sigma, Tensor):
        return float(sigma) ** 2
    s2 = sigma.detach().float().to(like.device).pow(2)
    return s2.reshape(-1, *([1] * (like.ndim - 1))) if s2.ndim else s2


def _mean_log_likelihood(logits: Tensor, w: Tensor, dim: int, sigma: Sigma) -> Tensor:
    k = logits.shape[-1]
    s2 = _sigma2(sigma, logits[..., 0])  # number or (B, 1)
    const = -math.log(k) - 0.5 * dim * torch.log(2.0 * math.pi * torch.as_tensor(s2))
    per_point = torch.logsumexp(logits, dim=-1) + const  # (B, N)
    total = w.sum(1)
    return (per_point * w).sum(1) / total.clamp_min(1e-12) * (total > 0)


def data_sigma(keys: Tensor, *, scale: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """Kernel scale from the data: keys (B, N, C) -> sigma (B,) float32 (no gradient) with
    ``sigma^2 = scale * lambda_max``, the largest eigenvalue of the (``mask``-weighted)
    covariance of each element's keys.

    Why: with temperature ``2 sigma^2`` the all-prototypes-at-the-mean solution is a stable
    fixed point of EM exactly when ``sigma^2 >= lambda_max`` (the first critical temperature
    of deterministic annealing, Rose 1998), so any scale < 1 rules out the total collapse and a
    smaller one lets the prototypes split further; 0.1 keeps ~K distinct prototypes on every
    FPN level of the shipped PCAN and on random keys. The scale follows the keys' spread, so
    it holds for tight keys (a few hundredths apart) and for keys spread over the sphere
    alike. Keys that are all equal get sigma 1e-4."""
    with torch.no_grad(), torch.autocast(keys.device.type, enabled=False):
        x = keys.detach().float()
        w = _weights(mask, x.shape[0], x.shape[1], x.device).unsqueeze(-1)  # (B, N, 1)
        tot = w.sum(1, keepdim=True).clamp_min(1e-12)
        xc = x - (w * x).sum(1, keepdim=True) / tot
        cov = (w * xc).transpose(1, 2) @ xc / tot  # (B, C, C)
        lam = torch.linalg.eigvalsh(cov.cpu())[:, -1].to(x.device)
        return (scale * lam).clamp_min(1e-8).sqrt()


def responsibility_entropy(resp: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean per-point entropy of responsibilities (B, N, K), divided by log K -> (B,) in
    [0, 1]: 1 = every point spread evenly over all prototypes (collapsed: all prototypes alike),
    0 = hard assignments."""
    k = resp.shape[-1]
    r = resp.float()
    h = -(r * r.clamp_min(1e-12).log()).sum(-1) / max(math.log(k), 1e-12)  # (B, N)
    w = _weights(mask, r.shape[0], r.shape[1], r.device)
    return (h * w).sum(1) / w.sum(1).clamp_min(1e-12)
