"""The precision resolver: forced choices, ``auto`` on CPUs with and without native bf16 (the
capability probe monkeypatched), CUDA by capability, warnings, the probe, and that no default
path in the package hard-codes bf16 any more."""

from __future__ import annotations

import ast
import inspect
import logging
from pathlib import Path

import pytest
import torch

from instseg.utils import precision
from instseg.utils.precision import amp_dtype, autocast, precision_info, resolve_amp

SRC = Path(precision.__file__).resolve().parents[1]


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set the CPU's bf16 capability: ``cpu_bf16(True|False)``; resets the log-once memory."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda: native)
        monkeypatch.setattr(precision, "_logged", set())

    return set_native


@pytest.mark.parametrize(("native", "want"), [(True, "bf16"), (False, "none")])
def test_auto_on_cpu_follows_native_bf16(cpu_bf16, native, want):
    cpu_bf16(native)
    assert resolve_amp("auto", "cpu") == want
    assert resolve_amp("auto", torch.device("cpu")) == want
    assert amp_dtype("auto", "cpu") == (torch.bfloat16 if native else None)


@pytest.mark.parametrize("native", [True, False])
def test_forced_choices_win_over_capability(cpu_bf16, native):
    cpu_bf16(native)
    assert resolve_amp("bf16", "cpu") == "bf16"
    assert resolve_amp("none", "cpu") == "none"
    assert resolve_amp("fp32", "cpu") == "none"
    assert amp_dtype("bf16", "cpu") == torch.bfloat16
    assert amp_dtype("none", "cpu") is None


def test_fp16_needs_cuda_and_unknown_values_fail(cpu_bf16):
    cpu_bf16(True)
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="amp must be one of.*'bf61'"):
        resolve_amp("bf61", "cpu")


def test_forced_bf16_without_native_support_warns_once(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.INFO, logger="instseg.utils.precision"):
        resolve_amp("bf16", "cpu")
        resolve_amp("bf16", "cpu")
    warns = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1 and "slower" in warns[0].getMessage()


def test_resolution_is_logged_once_per_request(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.INFO, logger="instseg.utils.precision"):
        for _ in range(3):
            resolve_amp("auto", "cpu")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "amp=auto -> fp32 on cpu" in msgs[0], msgs


def test_native_bf16_cpu_logs_no_warning(cpu_bf16, caplog):
    cpu_bf16(True)
    with caplog.at_level(logging.INFO, logger="instseg.utils.precision"):
        resolve_amp("bf16", "cpu")
    assert all(r.levelno < logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(("bf16_ok", "want"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_by_capability(monkeypatch, bf16_ok, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    monkeypatch.setattr(precision, "_logged", {("auto", "cuda")})  # no device query for the log
    assert resolve_amp("auto", "cuda") == want


def test_other_devices_run_fp32(monkeypatch):
    monkeypatch.setattr(precision, "_logged", {("auto", "meta")})
    assert resolve_amp("auto", "meta") == "none"


def test_autocast_context(cpu_bf16):
    cpu_bf16(True)
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with autocast("auto", "cpu"):
        assert conv(x).dtype == torch.bfloat16
    cpu_bf16(False)
    with autocast("auto", "cpu"):
        assert conv(x).dtype == torch.float32
    with autocast("none", "cpu"):
        assert conv(x).dtype == torch.float32


def test_precision_info_records_request_and_resolution(cpu_bf16):
    cpu_bf16(False)
    info = precision_info("auto", "cpu")
    assert info["amp"] == "auto" and info["resolved"] == "fp32" and info["device"] == "cpu"
    assert info["cpu_bf16_native"] is False and info["cpu"]
    assert "amp=auto -> fp32 on cpu" in precision.precision_header("auto", "cpu")


def test_env_override_and_probe(monkeypatch):
    """INSTSEG_CPU_BF16 overrides torch's answer; where torch cannot tell, the micro-probe
    decides from timings (bf16 must beat 0.8x fp32's time)."""
    monkeypatch.setenv("INSTSEG_CPU_BF16", "0")
    assert precision._ask_torch_bf16() is False
    monkeypatch.setenv("INSTSEG_CPU_BF16", "1")
    assert precision._ask_torch_bf16() is True
    monkeypatch.delenv("INSTSEG_CPU_BF16")
    monkeypatch.setattr(precision.platform, "machine", lambda: "arm64")
    assert precision._ask_torch_bf16() is None  # not x86: probed instead
    assert isinstance(precision._probe_bf16(repeats=1), bool)

    # the decision rule, with fake timings: fp32 first, then bf16 (per call: warm-up + 1 run)
    for t32, t16, want in [(10.0, 3.0, True), (10.0, 9.0, False), (10.0, 650.0, False)]:
        ticks = iter([0, 0, 0, t32, 0, 0, 0, t16])
        monkeypatch.setattr(precision.time, "perf_counter", lambda t=ticks: next(t))
        assert precision._probe_bf16(repeats=1) is want


def test_cpu_bf16_native_is_cached():
    assert precision.cpu_bf16_native() == precision.cpu_bf16_native()
    assert precision.cpu_bf16_native.cache_info().currsize == 1


def _defaults(node: ast.AST) -> list[tuple[str, object]]:
    out = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        pos = a.posonlyargs + a.args
        for arg, d in zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True):
            out.append((arg.arg, d))
        for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
            if d is not None:
                out.append((arg.arg, d))
    return out


def test_no_default_path_hard_codes_bf16():
    """Every ``amp`` default (function signatures, dataclass fields, argparse ``--amp``) in the
    package, the scripts and the shipped configs is "auto", and no code outside the resolver
    names ``torch.bfloat16`` for autocast."""
    roots = [SRC, SRC.parents[1] / "scripts"]
    bad = []
    for root in roots:
        for f in root.rglob("*.py"):
            tree = ast.parse(f.read_text(), filename=str(f))
            for node in ast.walk(tree):
                for name, d in _defaults(node):
                    if name == "amp" and not (isinstance(d, ast.Constant) and d.value == "auto"):
                        bad.append(f"{f}:{node.lineno} default amp={ast.unparse(d)}")
                if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "amp":
                    v = node.value
                    if not (isinstance(v, ast.Constant) and v.value == "auto"):
                        bad.append(f"{f}:{node.lineno} field amp = {ast.unparse(v)}")
                if isinstance(node, ast.Call) and any(
                    isinstance(a, ast.Constant) and a.value == "--amp" for a in node.args
                ):
                    kws = {k.arg: k.value for k in node.keywords}
                    d = kws.get("default")
                    if not (isinstance(d, ast.Constant) and d.value == "auto"):
                        bad.append(f"{f}:{node.lineno} --amp default")
            if f.name != "precision.py":
                for i, line in enumerate(f.read_text().splitlines(), 1):
                    if "autocast(" in line and "bfloat16" in line and '"""' not in line:
                        bad.append(f"{f}:{i} {line.strip()}")
    for cfg in [*(SRC / "configs").glob("*.yaml"), *(SRC.parents[1] / "configs").glob("*.yaml")]:
        for i, line in enumerate(cfg.read_text().splitlines(), 1):
            value = line.split(":", 1)[1].split("#")[0].strip() if ":" in line else ""
            if line.strip().startswith("amp:") and value != "auto":
                bad.append(f"{cfg}:{i} {line.strip()}")
    assert not bad, "\n".join(bad)


def test_predictors_resolve_on_construction():
    from instseg.inference.predictor import ImagePredictor
    from instseg.inference.video_predictor import VideoPredictor

    for cls in (ImagePredictor, VideoPredictor):
        assert inspect.signature(cls).parameters["amp"].default == "auto"
