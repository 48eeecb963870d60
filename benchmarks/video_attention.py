"""Cost of reading a T-frame space-time memory (survey Table 5.5): prototypical cross-attention
(PCAM) vs dense non-local attention vs space-time multi-head self-attention.

Setting (same for all three): one current frame + T memory frames of a (C, H, W) FPN feature.

- PCAM: 1x1 key/value convs and GMM-EM (K prototypes) on every memory frame (nothing cached,
  i.e. the cost of a whole tube; streaming inference caches the memory frames' prototypes and
  is cheaper), read + temporal aggregation + fusion for the current frame.
- Non-local: key/value convs on all frames, the current frame's HW queries attend to all
  T*HW memory pixels, fusion.
- Self-attention: one multi-head (8) self-attention layer over all (T+1)*HW tokens.

FLOPs: ``torch.utils.flop_counter`` (2 per multiply-add; matmuls and convs, softmax not
counted) on the meta device, so the paper's P3-size map (96x168, C=256, K=30) is counted
exactly without computing anything. The paper's numbers (23.7 / 99.6 / 1413.3 GFLOPs at T=8)
are most likely multiply-adds (half of ours).

Peak memory: the largest total size of live tensors allocated during the forward pass (no
grad, float32; inputs and weights excluded), tracked by a dispatch mode that counts each new
storage once and releases it when its storage is freed. Also run on the meta device, so it is
exact for the paper's size too; it does not include allocator caching/fragmentation or
library workspaces (``--check`` compares meta with real CPU tensors on a small map).

    python benchmarks/video_attention.py [--lengths 2 4 8 16 32] [--size 96 168] [--check]
"""

from __future__ import annotations

import argparse
import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from instseg.models.video.cross_attention import (
    DenseNonLocalAttention,
    MultiHeadSelfAttention,
    PrototypicalCrossAttention,
)

METHODS = ("pcam", "nonlocal", "mhsa")
PAPER = {  # Table 5.5: T -> (GFLOPs, memory MB) for pcam, nonlocal, mhsa
    2: ((5.8, 323), (24.3, 2497), (103.8, 5321)),
    4: ((12.0, 652), (49.1, 4763), (387.2, 9844)),
    8: ((23.7, 1419), (99.6, 9631), (1413.3, 18762)),
}


def build(method: str, c: int, k: int) -> torch.nn.Module:
    if method == "pcam":
        return PrototypicalCrossAttention(in_channels=c, key_channels=64, num_prototypes=k)
    if method == "nonlocal":
        return DenseNonLocalAttention(in_channels=c, key_channels=64)
    return MultiHeadSelfAttention(in_channels=c, num_heads=8)


def run(module: torch.nn.Module, method: str, cur: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    """One current frame (1, C, H, W) + T memory frames (1, T, C, H, W)."""
    if method == "pcam":
        assert isinstance(module, PrototypicalCrossAttention)
        k, v = module.encode(mem[0])  # (T, HW, .)
        kp, vp = module.prototypes(k, v)  # (T, K, .)
        out, _ = module(cur, (kp[None], vp[None]))
        return out
    if method == "nonlocal":
        return module(cur, mem)
    return module(torch.cat([mem, cur[:, None]], 1))


class PeakMemoryMode(TorchDispatchMode):
    """Tracks the bytes of storages created inside the mode; ``peak`` is the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self.seen:
            return
        self.seen.add(key)
        n = storage.nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, n)

    def _release(self, key: int, n: int) -> None:
        self.seen.discard(key)
        self.live -= n


def measure(
    method: str, t: int, c: int, h: int, w: int, k: int, device: str = "meta"
) -> tuple[float, float]:
    """-> (GFLOPs, peak MB) of one forward pass."""
    torch.manual_seed(0)
    with torch.device(device):
        module = build(method, c, k).eval()
        cur, mem = torch.randn(1, c, h, w), torch.randn(1, t, c, h, w)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run(module, method, cur, mem)
    tracker = PeakMemoryMode()
    with tracker, torch.no_grad():
        run(module, method, cur, mem)
    gc.collect()
    return counter.get_total_flops() / 1e9, tracker.peak / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--size", type=int, nargs=2, default=[96, 168], help="feature map H W")
    p.add_argument("--prototypes", type=int, default=30)
    p.add_argument("--check", action="store_true", help="meta vs real CPU on a 12x21 map, T=2")
    args = p.parse_args()
    if args.check:
        for m in METHODS:
            meta = measure(m, 2, 64, 12, 21, 8)
            cpu = measure(m, 2, 64, 12, 21, 8, device="cpu")
            print(
                f"check {m}: meta {meta[0]:.3f} GFLOPs {meta[1]:.2f} MB | "
                f"cpu {cpu[0]:.3f} GFLOPs {cpu[1]:.2f} MB"
            )
    c, (h, w), k = args.channels, args.size, args.prototypes
    print(f"# C={c}, {h}x{w} map, K={k}; T memory frames + the current frame; forward, fp32")
    head = f"{'T':>3} | " + " | ".join(f"{m + ' GFLOPs':>16} {m + ' MB':>11}" for m in METHODS)
    print(head + " | NL/PCAM flops  mem | SA/PCAM flops    mem")
    print("-" * (len(head) + 42))
    rows = {}
    for t in args.lengths:
        rows[t] = row = {m: measure(m, t, c, h, w, k) for m in METHODS}
        cells = " | ".join(f"{row[m][0]:16.1f} {row[m][1]:11.1f}" for m in METHODS)
        pf, pm = row["pcam"]
        ratios = (
            f"{row['nonlocal'][0] / pf:8.1f}x {row['nonlocal'][1] / pm:5.1f}x | "
            f"{row['mhsa'][0] / pf:8.1f}x {row['mhsa'][1] / pm:6.1f}x"
        )
        print(f"{t:>3} | {cells} | {ratios}", flush=True)
    _report(rows)
    return 0


def _report(rows: dict[int, dict[str, tuple[float, float]]]) -> None:
    ts = sorted(rows)
    print("\n# targets (paper, T=8): PCAM FLOPs and memory < 1/4 of non-local, < 1/10 of MHSA")
    if 8 in rows:
        r = rows[8]
        for other, frac in (("nonlocal", 4), ("mhsa", 10)):
            for i, what in ((0, "FLOPs"), (1, "memory")):
                ok = r["pcam"][i] * frac < r[other][i]
                print(
                    f"  PCAM {what} x{frac} < {other}: {ok} "
                    f"({r['pcam'][i]:.1f} vs {r[other][i]:.1f})"
                )
    if len(ts) >= 3:
        print("# marginal cost per extra memory frame between consecutive T (constant = linear)")
        for m in METHODS:
            for i, what in ((0, "GFLOPs"), (1, "MB")):
                inc = [
                    (rows[b][m][i] - rows[a][m][i]) / (b - a)
                    for a, b in zip(ts, ts[1:], strict=False)
                ]
                spread = max(inc) / max(min(inc), 1e-9)
                print(
                    f"  {m:>8} {what:>6}/frame: "
                    + ", ".join(f"{x:.1f}" for x in inc)
                    + f"  (max/min {spread:.2f}: {'linear' if spread < 1.1 else 'superlinear'})"
                )
    print(
        "  paper (GFLOPs, MB):", {t: dict(zip(METHODS, v, strict=True)) for t, v in PAPER.items()}
    )


if __name__ == "__main__":
    raise SystemExit(main())
