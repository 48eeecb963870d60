"""One place that decides the compute precision (autocast dtype) of training and inference.

``amp`` everywhere (configs, CLI flags, Python API) takes one of :data:`AMP_CHOICES`:

- ``"auto"`` (the default): bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX on x86,
  asked of torch's oneDNN build; where torch cannot tell, a one-off micro-probe times a 3x3 conv
  in both dtypes, cached per process), fp32 on every other CPU; on CUDA bf16 where the GPU
  supports it natively (Ampere and later), else fp16; fp32 on any other device.
- ``"bf16"`` / ``"fp16"``: forced. bf16 on a CPU without native support runs, with one warning
  that it will be slow (measured on a Zen 3 EPYC: a 3x3 conv 65x slower than fp32); fp16 needs
  CUDA.
- ``"none"`` (alias ``"fp32"``): no autocast.

``INSTSEG_CPU_BF16=0`` / ``=1`` overrides the CPU capability answer. To reproduce a CPU without
AVX-512 on one that has it, cap oneDNN and ATen: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` (torch then reports no native bf16 and emulates it, about 60x slower
per conv, as measured on a real Zen 3).

:func:`resolve_amp` turns a request into ``"bf16" | "fp16" | "none"`` and logs the choice once
per (request, device type); :func:`autocast` is the context manager every code path uses;
:func:`precision_info` is what run metadata and benchmarks record.

Why not just ``torch.autocast("cpu", torch.bfloat16)``: on CPUs without native bf16 oneDNN
emulates it, and the whole model gets one to two orders of magnitude slower.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import time
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch is imported where used: the CLI imports AMP_CHOICES without torch
    import torch

__all__ = [
    "AMP_CHOICES",
    "ResolvedAmp",
    "amp_dtype",
    "autocast",
    "cpu_bf16_native",
    "cpu_name",
    "precision_header",
    "precision_info",
    "resolve_amp",
]

logger = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "bf16", "fp16", "none", "fp32")
ResolvedAmp = Literal["bf16", "fp16", "none"]
_RESOLVED = ("bf16", "fp16", "none")
_logged: set[tuple[str, str]] = set()


def resolve_amp(amp: str = "auto", device: torch.device | str = "cpu") -> ResolvedAmp:
    """``amp`` request (one of :data:`AMP_CHOICES`) on ``device`` -> "bf16" | "fp16" | "none".

    Raises ``ValueError`` for an unknown request or fp16 off CUDA. Logs the resolution once per
    (request, device type); warns once when bf16 is forced on a CPU without native bf16."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    req = "none" if amp == "fp32" else amp
    if req not in ("auto", *_RESOLVED):
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    if req == "auto":
        resolved: ResolvedAmp = _auto(dev)
    elif req == "fp16" and dev.type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device (got {dev}); use amp='auto' or 'bf16'")
    else:
        resolved = req  # type: ignore[assignment]
    key = (req, dev.type)
    if key not in _logged:
        _logged.add(key)
        why = _reason(dev)
        if req == "bf16" and dev.type == "cpu" and not cpu_bf16_native():
            logger.warning(
                "amp=bf16 forced on a CPU without native bf16 (%s): autocast will be much slower "
                "than fp32 (a conv up to 65x); use amp=auto or amp=none",
                cpu_name(),
            )
        else:
            logger.info("precision: amp=%s -> %s on %s (%s)", req, _label(resolved), dev.type, why)
    return resolved


def amp_dtype(resolved: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """Autocast dtype of a request (resolved first), ``None`` for fp32."""
    import torch

    r = resolve_amp(resolved, device) if resolved not in _RESOLVED else resolved
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[r]


def autocast(amp: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (any request; resolved here) on ``device``, or a no-op."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    dtype = amp_dtype(amp, dev)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether this CPU runs bf16 convs/matmuls natively (asked of torch, else probed once)."""
    asked = _ask_torch_bf16()
    if asked is not None:
        return asked
    return _probe_bf16()


def precision_header(amp: str = "auto", device: torch.device | str = "cpu") -> str:
    """One line for a run's config.yaml: "precision: amp=auto -> fp32 on cpu (CPU, native bf16:
    no)"."""
    i = precision_info(amp, device)
    native = "yes" if i["cpu_bf16_native"] else "no"
    return (
        f"precision: amp={i['amp']} -> {i['resolved']} on {i['device']} "
        f"({i.get('gpu') or i['cpu']}; CPU native bf16: {native}, from {i['cpu_bf16_source']})"
    )


def precision_info(amp: str = "auto", device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a run records about its precision: request, resolution, device, CPU, capability."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    info: dict[str, Any] = {
        "amp": amp,
        "resolved": _label(resolve_amp(amp, dev)),
        "device": dev.type,
        "cpu": cpu_name(),
        "cpu_bf16_native": cpu_bf16_native(),
        "cpu_bf16_source": _bf16_source(),
        "torch": str(torch.__version__),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), plus its widest vector ISA as torch sees it."""
    import torch

    name = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):  # noqa: SIM115
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    with contextlib.suppress(Exception):
        name += f" [{torch.backends.cpu.get_cpu_capability()}]"
    return name


# ------------------------------------------------------------------------------------------


def _auto(dev: torch.device) -> ResolvedAmp:
    import torch

    if dev.type == "cpu":
        return "bf16" if cpu_bf16_native() else "none"
    if dev.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older signature
            native = torch.cuda.is_bf16_supported()
        return "bf16" if native else "fp16"
    return "none"


def _reason(dev: torch.device) -> str:
    import torch

    if dev.type == "cpu":
        src = _bf16_source()
        return f"{cpu_name()}, native bf16: {'yes' if cpu_bf16_native() else 'no'} ({src})"
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return dev.type


def _bf16_source() -> str:
    if os.environ.get("INSTSEG_CPU_BF16") in ("0", "1"):
        return "INSTSEG_CPU_BF16"
    return "torch" if _ask_torch_bf16() is not None else "micro-probe"


def _label(resolved: str) -> str:
    return "fp32" if resolved == "none" else resolved


def _ask_torch_bf16() -> bool | None:
    """oneDNN's own answer on x86 (AVX512-BF16 / AMX-BF16 / AVX-NE-CONVERT), else ``None``."""
    import torch

    env = os.environ.get("INSTSEG_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None  # Arm / Apple silicon: oneDNN's flag is not the whole story there; probe
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def _probe_bf16(repeats: int = 3) -> bool:
    """Time one 3x3 conv (2x32x48x48) in fp32 and under bf16 autocast; native iff bf16 takes
    under 0.8x fp32's time (native bf16 wins by 2-4x, emulated bf16 loses by 10-65x)."""
    import torch

    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(2, 32, 48, 48)

    def best(ctx: Any) -> float:
        times = []
        with torch.no_grad():
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                with ctx():
                    conv(x)
                times.append(time.perf_counter() - t0)
        return min(times[1:])

    t32 = best(contextlib.nullcontext)
    t16 = best(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    native = t16 < 0.8 * t32
    logger.info(
        "bf16 micro-probe: conv fp32 %.2f ms, bf16 %.2f ms -> native bf16: %s",
        t32 * 1e3,
        t16 * 1e3,
        native,
    )
    return native
